"""The typed details of a failed Solve, as buildkitd sends them for buildctl to print: the
Dockerfile's lines (``errdefs.Source``, JSON in an ``Any`` of a ``google.rpc.Status``)."""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from llbkit.core.control.errdetails import (
    SOURCE_TYPE,
    shown_source,
    source_detail,
    status_details,
)
from llbkit.core.errors import source_block

TEXT = "".join(f"RUN step {n}\n" for n in range(1, 1203))


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's fields in order: (number, varint or bytes)."""

    def varint(at: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if not byte & 0x80:
                return value, at

    found: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = varint(at)
        if key & 7 == 0:
            value, at = varint(at)
            found.append((key >> 3, value))
        else:
            size, at = varint(at)
            found.append((key >> 3, data[at : at + size]))
            at += size
    return found


@pytest.mark.parametrize(
    ("first", "last"), [(1, 1), (2, 3), (600, 600), (1201, 1202), (1000, 1003)]
)
def test_the_lines_come_back_as_they_were_shown(first: int, last: int) -> None:
    block = source_block(TEXT, "Dockerfile", first, last)
    detail = source_detail(block)
    assert detail is not None
    assert detail["ranges"] == [{"start": {"line": first}, "end": {"line": last}}]
    status = _fields(status_details(2, "process failed", detail))
    assert status[:2] == [(1, 2), (2, b"process failed")]
    ((number, packed),) = status[2:]
    assert number == 3 and isinstance(packed, bytes)
    ((_, url), (_, value)) = _fields(packed)
    assert url == SOURCE_TYPE.encode()
    sent = json.loads(value)  # as Go's encoding/json reads it into errdefs.Source
    assert sent["info"]["filename"] == "Dockerfile"
    data = base64.b64decode(sent["info"]["data"]).decode().split("\n")
    # The file's lines where BuildKit's printer reads them, nothing of the rest.
    shown = [n for n in range(1, len(data) + 1) if data[n - 1]]
    assert all(data[n - 1] == TEXT.split("\n")[n - 1] for n in shown)
    # BuildKit prints the same block from it (its printer's rules are source_block's).
    assert shown_source([AnyMessage(type_url=SOURCE_TYPE, value=value)]) == block


def test_without_such_lines_only_the_message_is_sent() -> None:
    assert source_detail("") is None
    assert source_detail("frontend dockerfile.v0") is None
    assert source_detail("Dockerfile:2\n---\n not a line\n---") is None
    assert _fields(status_details(2, "boom", None)) == [(1, 2), (2, b"boom")]


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b'{"info": {"data": "%%%"}, "ranges": [{"start": {"line": 1}, "end": {}}]}',
        b'{"info": {"data": "eA=="}, "ranges": []}',
        b'{"info": {"data": "eA=="}, "ranges": [{"start": {"line": 9}, "end": {}}]}',
        b'{"ranges": "x"}',
    ],
)
def test_a_clients_malformed_source_is_left_out(value: bytes) -> None:
    assert shown_source([AnyMessage(type_url=SOURCE_TYPE, value=value)]) == ""
    assert shown_source([AnyMessage(type_url="other", value=b"{}")]) == ""
