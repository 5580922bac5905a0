"""What buildctl reads of a failed Solve besides its message: BuildKit's typed error details.

buildkitd sends them in the ``grpc-status-details-bin`` trailer (a ``google.rpc.Status`` whose
details are ``Any``s holding JSON, as BuildKit's ``grpcerrors`` writes them); buildctl prints an
``errdefs.Source`` above the error: the lines of the Dockerfile where it failed. llbkit's
errors carry those lines as they are printed, so the source is read back from them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from llbkit.core.errors import BuildFailed, SourceError, UserError, source_block

__all__ = [
    "STATUS_DETAILS",
    "shown_source",
    "source_detail",
    "status_details",
    "status_source",
    "trailer",
]

STATUS_DETAILS = "grpc-status-details-bin"
#: the type URL BuildKit registers ``errdefs.Source`` under (its value is Go's JSON of it)
SOURCE_TYPE = "github.com/moby/buildkit/errdefs.Source+json"
_HEAD = re.compile(r"(.+):(\d+)")
_LINE = re.compile(r" *(\d+) \| (>>>|   ) (.*)")


def trailer(err: UserError, message: str) -> tuple[str, bytes]:
    """The ``grpc-status-details-bin`` trailer of ``err`` answered as UNKNOWN ``message``."""
    where = err.source if isinstance(err, BuildFailed | SourceError) else ""
    return STATUS_DETAILS, status_details(2, message, source_detail(where))


class AnyMessage(Protocol):
    """A ``google.protobuf.Any``: protobuf's own, or one :func:`status_source` decoded."""

    @property
    def type_url(self) -> str: ...

    @property
    def value(self) -> bytes: ...


class _Any(NamedTuple):
    type_url: str
    value: bytes


def status_source(data: bytes) -> str:
    """The block of the ``errdefs.Source`` in a serialized ``google.rpc.Status`` (the
    ``grpc-status-details-bin`` trailer of a failed call), or ""."""
    try:
        found = []
        for number, packed in _fields(data):
            if number == 3 and isinstance(packed, bytes):
                parts = dict(_fields(packed))
                url, value = parts.get(1, b""), parts.get(2, b"")
                if isinstance(url, bytes) and isinstance(value, bytes):
                    found.append(_Any(url.decode(), value))
    except (IndexError, UnicodeDecodeError):
        return ""
    return shown_source(found)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's fields in order: (number, a varint's value or bytes)."""
    found: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        if key & 7 == 0:
            value, at = _read_varint(data, at)
            found.append((key >> 3, value))
        elif key & 7 == 2:
            size, at = _read_varint(data, at)
            if at + size > len(data):
                raise IndexError("a field past the message's end")
            found.append((key >> 3, data[at : at + size]))
            at += size
        else:
            raise IndexError(f"wire type {key & 7}")
    return found


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at
        if shift > 63:
            raise IndexError("a varint too long")


def shown_source(details: Iterable[AnyMessage]) -> str:
    """The block of the ``errdefs.Source`` among a ``google.rpc.Status``'s details (``Any``
    messages: how buildctl's gateway client hands a frontend's failure back), or ""."""
    for detail in details:
        if detail.type_url != SOURCE_TYPE:
            continue
        try:
            source = json.loads(detail.value)
            info = source.get("info") or {}
            data = base64.b64decode(info.get("data") or "", validate=True)
            text = data.decode("utf-8", "replace")
            lines = [
                (int(r["start"].get("line", 0)), int(r["end"].get("line", 0)))
                for r in source["ranges"]
            ]
            first, last = min(s for s, _ in lines), max(max(s, e) for s, e in lines)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return ""  # not what BuildKit sends: the message alone says enough
        if 1 <= first <= len(text.split("\n")):
            return source_block(text, str(info.get("filename", "")), first, last)
    return ""


def source_detail(shown: str) -> dict[str, object] | None:
    """``errdefs.Source`` (as JSON) of the lines llbkit prints for a failure (``Dockerfile:2``,
    a rule, `` 1 |     FROM …``, `` 2 | >>> RUN …``, a rule), or None for anything else.

    The file's data is the lines shown, after as many empty ones as come before them: BuildKit
    prints the same lines from it, since it adds context lines only up to the file's end."""
    lines = shown.split("\n")
    head = _HEAD.fullmatch(lines[0]) if lines else None
    numbered = [m for m in (_LINE.fullmatch(line) for line in lines[2:-1]) if m]
    if head is None or not numbered or len(numbered) != len(lines) - 3:
        return None
    marked = [int(m[1]) for m in numbered if m[2] == ">>>"]
    first = int(numbered[0][1])
    if not marked or [int(m[1]) for m in numbered] != list(range(first, first + len(numbered))):
        return None
    data = "\n" * (first - 1) + "\n".join(m[3] for m in numbered)
    return {
        "info": {"filename": head[1], "data": base64.b64encode(data.encode()).decode()},
        "ranges": [{"start": {"line": min(marked)}, "end": {"line": max(marked)}}],
    }


def status_details(code: int, message: str, source: dict[str, object] | None) -> bytes:
    """A serialized ``google.rpc.Status`` with ``source`` as its one detail (if any)."""
    details = b""
    if source is not None:
        value = json.dumps(source, separators=(",", ":")).encode()
        any_message = _field(1, SOURCE_TYPE.encode()) + _field(2, value)
        details = _field(3, any_message)
    return _varint_field(1, code) + _field(2, message.encode()) + details


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data if data else b""
