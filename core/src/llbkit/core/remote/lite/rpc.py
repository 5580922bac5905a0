"""gRPC's framing over :mod:`.h2`: length-prefixed messages, and the status a call ends with."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

from llbkit.core.remote.lite.h2 import Connection, H2Error, Stream

__all__ = ["Call", "RpcError", "abandon", "serve"]

OK, CANCELLED, UNKNOWN, NOT_FOUND, UNIMPLEMENTED, UNAVAILABLE = 0, 1, 2, 5, 12, 14
#: as buildctl's limit: a definition or a file chunk may be large
MESSAGE_BYTES = 16 << 20


#: gRPC's status codes by number, as the full client names one without a message
CODE_NAMES = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
]


class RpcError(Exception):
    """A call that ended with a status other than OK."""

    def __init__(self, code: int, message: str, metadata: dict[str, str]) -> None:
        super().__init__(message or f"gRPC status {code}")
        self.code = code
        self.message = message
        self.metadata = metadata


class Call:
    """One call on a stream: messages each way, and its final status."""

    def __init__(self, stream: Stream, *, serving: bool = False) -> None:
        self.stream = stream
        self.serving = serving  # the peer's requests end without a status
        self._buffer = bytearray()

    @classmethod
    def start(cls, conn: Connection, path: str, metadata: Sequence[tuple[str, str]] = ()) -> Call:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *metadata,
        ]
        return cls(conn.open(headers))

    def send(self, message: bytes, *, end: bool = False) -> None:
        self.stream.send_data(b"\0" + len(message).to_bytes(4, "big") + message, end=end)

    def done_writing(self) -> None:
        self.stream.send_data(b"", end=True)

    def messages(self) -> Iterator[bytes]:
        """Each message the peer sends; a status other than OK is raised at the end."""
        while True:
            while len(self._buffer) < 5 or len(self._buffer) < 5 + _size(self._buffer):
                more = self.stream.read()
                if not more:
                    if self._buffer:
                        raise RpcError(UNKNOWN, "the stream ended inside a message", {})
                    if not self.serving:
                        self._check()
                    elif self.stream.reset is not None or not self.stream.ended:
                        # Reset, or cut with the connection: the caller never finished.
                        raise RpcError(CANCELLED, "the caller canceled", {})
                    return
                self._buffer += more
            size = _size(self._buffer)
            if self._buffer[0]:
                raise RpcError(UNIMPLEMENTED, "a compressed message, which was not asked for", {})
            message = bytes(self._buffer[5 : 5 + size])
            del self._buffer[: 5 + size]
            yield message

    def unary(self) -> bytes:
        """The one answer of a unary call."""
        answers = list(self.messages())
        if len(answers) != 1:
            raise RpcError(UNKNOWN, f"{len(answers)} answers to a unary call", {})
        return answers[0]

    def _check(self) -> None:
        stream = self.stream
        fields = dict(stream.trailers or stream.headers or [])
        if "grpc-status" not in fields:  # a status said before a reset still counts
            if stream.reset is not None:
                raise RpcError(CANCELLED, f"the call was reset ({stream.reset})", {})
            closed = stream.conn.closed
            raise RpcError(UNAVAILABLE, closed or "the call ended without a status", {})
        code = int(fields["grpc-status"]) if fields["grpc-status"].isdigit() else UNKNOWN
        if code != OK:
            raise RpcError(code, _unquote(fields.get("grpc-message", "")), fields)


def _size(buffer: bytearray) -> int:
    size = int.from_bytes(buffer[1:5], "big")
    if size > MESSAGE_BYTES:
        raise RpcError(UNKNOWN, f"a message of {size} bytes is beyond the limit", {})
    return size


Handler = Callable[[Call, dict[str, list[str]]], None]


def serve(handlers: dict[str, Handler]) -> Callable[[Stream], None]:
    """An ``on_stream`` for a server connection: each call runs its handler on a thread of
    its own, which sends the answers; the status follows (an error as ``RpcError``)."""

    def on_stream(stream: Stream) -> None:
        threading.Thread(target=_answer, args=(stream, handlers), daemon=True).start()

    return on_stream


def _answer(stream: Stream, handlers: dict[str, Handler]) -> None:
    metadata: dict[str, list[str]] = {}
    for key, value in stream.headers or []:
        metadata.setdefault(key, []).append(value)
    path = metadata.get(":path", [""])[0]
    handler = handlers.get(path)
    try:
        if handler is None:
            status = [("grpc-status", str(UNIMPLEMENTED)), ("grpc-message", f"unknown {path}")]
            stream.send_headers(
                [(":status", "200"), ("content-type", "application/grpc"), *status], end=True
            )
            return
        stream.send_headers([(":status", "200"), ("content-type", "application/grpc")])
        try:
            handler(Call(stream, serving=True), metadata)
            status = [("grpc-status", "0")]
        except RpcError as err:
            status = [("grpc-status", str(err.code)), ("grpc-message", _quote(err.message))]
        except Exception as err:  # a bug here: the daemon hears it instead of waiting forever
            said = f"{type(err).__name__}: {err}"
            status = [("grpc-status", str(UNKNOWN)), ("grpc-message", _quote(said))]
        stream.send_headers(status, end=True)
    except H2Error as err:
        abandon(stream, path, err)


def abandon(stream: Stream, path: str, err: H2Error) -> None:
    """A call that cannot be answered is reset, so that the caller is not left waiting for an
    answer that never comes; unless the caller reset it or the connection is gone (nobody
    is left to tell), what went wrong is said on stderr, the call named."""
    if stream.reset is not None or stream.conn.closed is not None:
        return
    import sys

    print(f"llbkit: warning: the daemon's call {path} failed: {err}", file=sys.stderr)
    with contextlib.suppress(H2Error):
        stream.cancel()


def _quote(text: str) -> str:
    """grpc-message's percent-encoding of what is not printable ASCII."""
    return "".join(
        c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
        for c in text
    )


def _unquote(text: str) -> str:
    """grpc-message's text: percent-decoded, then UTF-8 (header values arrive as latin-1)."""
    raw = text.encode("latin-1", "replace")
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)
