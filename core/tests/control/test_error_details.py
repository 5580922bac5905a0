"""The typed details of a failed Solve, as buildkitd sends them for buildctl to print: the
Dockerfile's lines (``errdefs.Source``, JSON in an ``Any`` of a ``google.rpc.Status``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from llbkit.core.control.errdetails import (
    SOURCE_TYPE,
    shown_source,
    source_detail,
    status_details,
    status_source,
)
from llbkit.core.errors import source_block

TEXT = "".join(f"RUN step {n}\n" for n in range(1, 1203))


def _status(data: bytes) -> Any:
    """``data`` read as a ``google.rpc.Status`` by protobuf itself (a class made from the
    message's definition, as googleapis defines it)."""
    from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)
    status = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    message = status.message_type.add(name="Status")
    kinds = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="code", number=1, type=kinds.TYPE_INT32, label=kinds.LABEL_OPTIONAL)
    message.field.add(name="message", number=2, type=kinds.TYPE_STRING, label=kinds.LABEL_OPTIONAL)
    message.field.add(
        name="details",
        number=3,
        type=kinds.TYPE_MESSAGE,
        label=kinds.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status)
    made = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
    return made.FromString(data)


@pytest.mark.parametrize(
    ("first", "last"), [(1, 1), (2, 3), (600, 600), (1201, 1202), (1000, 1003)]
)
def test_the_lines_come_back_as_they_were_shown(first: int, last: int) -> None:
    block = source_block(TEXT, "Dockerfile", first, last)
    detail = source_detail(block)
    assert detail is not None
    assert detail["ranges"] == [{"start": {"line": first}, "end": {"line": last}}]
    sent_bytes = status_details(2, "process failed", detail)
    status = _status(sent_bytes)
    assert (status.code, status.message) == (2, "process failed")
    (any_message,) = status.details
    assert any_message.type_url == SOURCE_TYPE
    value = any_message.value
    sent = json.loads(value)  # as Go's encoding/json reads it into errdefs.Source
    assert sent["info"]["filename"] == "Dockerfile"
    data = base64.b64decode(sent["info"]["data"]).decode().split("\n")
    # The file's lines where BuildKit's printer reads them, nothing of the rest.
    shown = [n for n in range(1, len(data) + 1) if data[n - 1]]
    assert all(data[n - 1] == TEXT.split("\n")[n - 1] for n in shown)
    # BuildKit prints the same block from it (its printer's rules are source_block's).
    assert shown_source([AnyMessage(type_url=SOURCE_TYPE, value=value)]) == block
    assert status_source(sent_bytes) == block  # as llbkit's client reads the trailer


def test_without_such_lines_only_the_message_is_sent() -> None:
    assert source_detail("") is None
    assert source_detail("frontend dockerfile.v0") is None
    assert source_detail("Dockerfile:2\n---\n not a line\n---") is None
    status = _status(status_details(2, "boom", None))
    assert (status.code, status.message, len(status.details)) == (2, "boom", 0)
    assert status_source(b"\xff\xff") == status_source(b"\x1a\x05ab") == ""  # cut short


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


def test_a_daemon_sending_only_buildkits_detail_still_shows_the_lines() -> None:
    """buildkitd sends the Dockerfile's lines only as BuildKit's typed detail (no llbkit
    trailer): llbkit's client shows them as buildctl does."""
    import grpc

    from llbkit.core.control.errdetails import STATUS_DETAILS
    from llbkit.core.errors import FrontendFailed
    from llbkit.core.remote.controller import _raise_typed

    block = source_block(TEXT, "Dockerfile", 3, 3)
    details = status_details(2, "not found", source_detail(block))
    err = grpc.aio.AioRpcError(
        grpc.StatusCode.UNKNOWN,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS, details)),
        details="not found",
    )
    with pytest.raises(FrontendFailed) as raised:
        _raise_typed(err, "unix:///run/buildkit/buildkitd.sock")
    assert str(raised.value) == "failed to solve: not found"
    assert raised.value.source == block
