"""What buildctl reads of a failed Solve besides its message: BuildKit's typed error details.

buildkitd sends them in the ``grpc-status-details-bin`` trailer: a ``google.rpc.Status`` (whose
fields ``moby.buildkit.v1.Status`` has) with details that are ``Any``s holding JSON, as
BuildKit's ``grpcerrors`` writes them. buildctl prints an ``errdefs.Source`` above the error:
the lines of the Dockerfile where it failed. llbkit's errors carry those lines as they are
printed, so the source is read back from them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from google.protobuf.any_pb2 import Any
from google.protobuf.message import DecodeError

from llbkit.core.api._pb.control_pb2 import Status
from llbkit.core.errors import BuildFailed, SourceError, UserError, source_block

if TYPE_CHECKING:
    import grpc.aio

__all__ = [
    "STATUS_DETAILS",
    "abort_failed",
    "shown_source",
    "source_detail",
    "status_details",
    "status_source",
    "trailer",
]

STATUS_DETAILS = "grpc-status-details-bin"
#: the type URL BuildKit registers ``errdefs.Source`` under (its value is Go's JSON of it)
SOURCE_TYPE = "github.com/moby/buildkit/errdefs.Source+json"
#: gRPC's UNKNOWN, what buildkitd answers a failed build with
_UNKNOWN = 2
_HEAD = re.compile(r"(.+):(\d+)")
_LINE = re.compile(r" *(\d+) \| (>>>|   ) (.*)")


def trailer(err: UserError, message: str) -> tuple[str, bytes]:
    """The ``grpc-status-details-bin`` trailer of ``err`` answered as UNKNOWN ``message``."""
    where = err.source if isinstance(err, BuildFailed | SourceError) else ""
    return STATUS_DETAILS, status_details(_UNKNOWN, message, source_detail(where))


async def abort_failed(
    context: grpc.aio.ServicerContext[object, object],
    err: UserError,
    message: str,
    extra: Iterable[tuple[str, bytes]] = (),
) -> NoReturn:
    """End a call as buildkitd ends a failed one: UNKNOWN ``message``, and the same code and
    message in the typed details of the trailer (gRPC's clients refuse them differing),
    after any ``extra`` trailers."""
    import grpc

    context.set_trailing_metadata((*extra, trailer(err, message)))
    await context.abort(grpc.StatusCode.UNKNOWN, message)


def status_source(data: bytes) -> str:
    """The block of the ``errdefs.Source`` in a serialized ``google.rpc.Status`` (the
    ``grpc-status-details-bin`` trailer of a failed call), or ""."""
    try:
        return shown_source(Status.FromString(data).details)
    except DecodeError:
        return ""


def shown_source(details: Iterable[Any]) -> str:
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
    """A serialized ``google.rpc.Status`` (``moby.buildkit.v1.Status`` has its fields) with
    ``source`` as its one detail (if any)."""
    status = Status(code=code, message=message)
    if source is not None:
        value = json.dumps(source, separators=(",", ":")).encode()
        status.details.append(Any(type_url=SOURCE_TYPE, value=value))
    return status.SerializeToString()
