"""HTTP/2 as gRPC uses it, on blocking I/O and threads: enough for a client that must start in
milliseconds (grpcio and asyncio take 60 ms to import) and for the services it serves to the
daemon through its session.

One reader thread per connection parses frames and hands them to streams; callers block on a
stream's condition. We grant the peer large windows (and give credit back as data arrives, the
caller's buffer being unbounded), and respect the windows it grants us.
"""

from __future__ import annotations

import collections
import contextlib
import struct
import threading
from collections.abc import Callable, Iterator

from llbkit.core.remote.lite import hpack
from llbkit.core.session.methods import MESSAGE_MAX

__all__ = ["Connection", "H2Error", "Stream"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
#: SETTINGS identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x2, 0x4, 0x5
#: what we grant each stream and the connection; credit goes back once half is used
WINDOW = 1 << 30
#: the largest frame we accept
FRAME = 1 << 20
#: the most data one write sends (through a session, one message carries a write)
WRITE = MESSAGE_MAX


class H2Error(Exception):
    """The connection failed or the peer broke the protocol."""


class Stream:
    """One request: headers, data and trailers as they arrive; data sent within its window."""

    def __init__(self, conn: Connection, stream_id: int, window: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] = []
        self.send_window = window
        self.reset: int | None = None
        self.ended = False  # the peer sent END_STREAM
        self._chunks: collections.deque[bytes] = collections.deque()
        self._unacked = 0

    def read(self) -> bytes:
        """The next bytes of data; ``b""`` once the peer ended the stream (or it failed)."""
        cond = self.conn.cond
        with cond:
            while not self._chunks and not self._finished():
                cond.wait()
            if self._chunks:
                return self._chunks.popleft()
            return b""

    def wait_headers(self) -> list[tuple[str, str]]:
        with self.conn.cond:
            while self.headers is None and not self._finished():
                self.conn.cond.wait()
            return self.headers or []

    def _finished(self) -> bool:
        return self.ended or self.reset is not None or self.conn.closed is not None

    def send_headers(self, headers: list[tuple[str, str]], *, end: bool = False) -> None:
        self.conn.send_headers(self.id, headers, end=end)

    def send_data(self, data: bytes, *, end: bool = False) -> None:
        self.conn.send_data(self, data, end=end)

    def cancel(self, code: int = 0x8) -> None:
        """RST_STREAM (CANCEL by default), unless it is over already."""
        with self.conn.cond:
            if self.reset is not None or self.conn.closed is not None:
                return
            self.reset = code
            self.conn.cond.notify_all()
        self.conn.write_frame(RST_STREAM, 0, self.id, struct.pack(">I", code))


class Connection:
    """A client (``server=False``) or server connection over ``read``/``write``.

    :param read: the next bytes from the peer, ``b""`` at the end.
    :param write: sends bytes (whole frames; called under the write lock).
    :param on_stream: called, on the reader thread, with each stream the peer opens (servers).
    :param on_lost: called, on the reader thread, with the reason when the connection ends
        without :meth:`close` (the peer went, broke the protocol, or the reader failed):
        whoever carries the connection can tell the peer, which would otherwise wait.
    """

    def __init__(
        self,
        read: Callable[[], bytes],
        write: Callable[[bytes], None],
        *,
        server: bool = False,
        on_stream: Callable[[Stream], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._read = read
        self._write = write
        self.server = server
        self.on_stream = on_stream
        self.on_lost = on_lost
        self.cond = threading.Condition()
        self._wlock = threading.Lock()
        #: frames the reader owes the peer (ACKs, window credit), sent by whoever writes next
        self._owed: list[bytes] = []
        self.streams: dict[int, Stream] = {}
        self.closed: str | None = None
        #: the last stream a peer that said GOAWAY still serves
        self.going_away: int | None = None
        self._next_id = 2 if server else 1
        self._peer_window = 65535  # the connection's send window
        self._peer_initial = 65535
        self._peer_frame = 16384
        self._unacked = 0
        self._decoder = hpack.Decoder()
        settings = struct.pack(">HI", INITIAL_WINDOW_SIZE, WINDOW) + struct.pack(
            ">HI", MAX_FRAME_SIZE, FRAME
        )
        if not server:
            settings += struct.pack(">HI", ENABLE_PUSH, 0)
        opening = (b"" if server else PREFACE) + _frame(SETTINGS, 0, 0, settings)
        if WINDOW > 65535:
            opening += _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - 65535))
        try:
            self._write(opening)
        except OSError as err:
            raise H2Error(f"the connection failed: {err.strerror or err}") from None
        self._thread = threading.Thread(target=self._run, name="h2-reader", daemon=True)
        self._thread.start()

    # -- sending --------------------------------------------------------------------------

    def write_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        with self._writing():
            self._send(_frame(kind, flags, stream_id, payload))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock; on letting go, what the reader owes is sent."""
        with self._wlock:
            yield
        self._pay()

    def _owe(self, frame: bytes) -> None:
        """A frame the reader must send. It never waits for the write lock: a writer may hold
        it while the socket is full, and the peer may be waiting for this very credit before
        it reads; the writer sends it as it lets go."""
        with self.cond:
            self._owed.append(frame)
        self._pay()

    def _pay(self) -> None:
        while self._owed:
            if not self._wlock.acquire(blocking=False):
                return  # its holder pays as it lets go
            try:
                with self.cond:
                    owed, self._owed = b"".join(self._owed), []
                with contextlib.suppress(H2Error):  # a failed connection says so to everyone
                    self._send(owed)
            finally:
                self._wlock.release()

    def _send(self, data: bytes) -> None:
        """Write whole frames; the caller holds the write lock."""
        if self.closed is not None:
            raise H2Error(self.closed)
        try:
            self._write(data)
        except OSError as err:
            self._close(f"the connection failed: {err.strerror or err}")
            raise H2Error(self.closed or "") from None

    def open(self, headers: list[tuple[str, str]], *, end: bool = False) -> Stream:
        """A new stream with these request headers."""
        # Stream ids must reach the peer in order: taken and sent under the write lock.
        with self._writing():
            with self.cond:
                if self.going_away is not None:
                    raise H2Error("the peer is shutting down and takes no new calls")
                stream = Stream(self, self._next_id, self._peer_initial)
                self._next_id += 2
                self.streams[stream.id] = stream
            self._send(self._header_frames(stream.id, headers, end))
        return stream

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], *, end: bool) -> None:
        with self._writing():  # a header block is never interleaved with other frames
            self._send(self._header_frames(stream_id, headers, end))

    def _header_frames(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> bytes:
        block = hpack.encode(headers)
        size = self._peer_frame
        if len(block) <= size:
            return _frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), stream_id, block)
        parts = [block[i : i + size] for i in range(0, len(block), size)]
        frames = [_frame(HEADERS, END_STREAM if end else 0, stream_id, parts[0])]
        frames += [_frame(CONTINUATION, 0, stream_id, p) for p in parts[1:-1]]
        frames.append(_frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
        return b"".join(frames)

    def send_data(self, stream: Stream, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` as the windows allow, blocking while they are spent."""
        view = memoryview(data)
        while True:
            with self.cond:
                while view and min(self._peer_window, stream.send_window) <= 0:
                    if stream.reset is not None or self.closed is not None:
                        break
                    self.cond.wait()
                if stream.reset is not None:
                    raise H2Error(f"the peer reset stream {stream.id} ({stream.reset})")
                size = max(0, min(len(view), self._peer_window, stream.send_window, WRITE))
                self._peer_window -= size
                stream.send_window -= size
                most = self._peer_frame
            last = size == len(view)
            # All the windows allow in one write, cut in frames: through a session each write
            # is a message of the stream that carries the connection, and a message costs
            # the same whatever its size (16 KiB frames made ten thousand of them a 156 MB
            # context).
            parts: list[bytes | memoryview] = []
            for start in range(0, size, most) if size else (0,):
                piece = view[start : min(start + most, size)]
                final = last and start + most >= size
                flags = END_STREAM if end and final else 0
                parts += (_header(len(piece), DATA, flags, stream.id), piece)
            frames = b"".join(parts)
            with self._writing():
                self._send(frames)
            view = view[size:]
            if last:
                return

    def close(self) -> None:
        """GOAWAY, then no more frames either way."""
        if self.closed is None:
            with contextlib.suppress(H2Error):
                self.write_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))
        self._close("the connection was closed")

    # -- receiving ------------------------------------------------------------------------

    def _close(self, why: str) -> None:
        with self.cond:
            if self.closed is None:
                self.closed = why
            self.cond.notify_all()

    def _run(self) -> None:
        why = "the peer closed the connection"
        try:
            self._receive()
        except (H2Error, hpack.HpackError) as err:
            why = str(err)
        except OSError as err:
            why = f"the connection failed: {err.strerror or err}"
        except BaseException as err:  # a defect here must not leave every caller waiting
            why = f"its reader failed: {type(err).__name__}: {err}"
        with self.cond:
            lost = self.closed is None
        self._close(why)
        if lost and self.on_lost is not None:
            self.on_lost(why)

    def _receive(self) -> None:
        buffer = bytearray()
        if self.server:
            while len(buffer) < len(PREFACE):
                more = self._read()
                if not more:
                    return
                buffer += more
            if bytes(buffer[: len(PREFACE)]) != PREFACE:
                raise H2Error("not an HTTP/2 client")
            del buffer[: len(PREFACE)]
        block = bytearray()  # a header block spread over CONTINUATION frames
        block_stream = 0
        block_flags = 0
        while True:
            at = 0  # frames are taken from here; the buffer is compacted once per read
            while len(buffer) - at >= 9:
                length = int.from_bytes(buffer[at : at + 3], "big")
                if length > FRAME:
                    raise H2Error(f"a frame of {length} bytes is beyond the agreed size")
                if len(buffer) - at < 9 + length:
                    break
                kind, flags = buffer[at + 3], buffer[at + 4]
                stream_id = int.from_bytes(buffer[at + 5 : at + 9], "big") & 0x7FFFFFFF
                payload = bytes(buffer[at + 9 : at + 9 + length])
                at += 9 + length
                if block_stream and kind != CONTINUATION:
                    raise H2Error("a header block was interrupted")
                if kind in (HEADERS, CONTINUATION):
                    if kind == HEADERS:
                        payload = _unpad(flags, payload)
                        if flags & PRIORITY_FLAG:
                            payload = payload[5:]
                        block_stream, block_flags = stream_id, flags
                    elif stream_id != block_stream:
                        raise H2Error("a CONTINUATION frame without its HEADERS")
                    block += payload
                    if flags & END_HEADERS:
                        self._headers(block_stream, block_flags, bytes(block))
                        block.clear()
                        block_stream = 0
                else:
                    self._frame(kind, flags, stream_id, payload)
            del buffer[:at]
            more = self._read()
            if not more:
                return
            buffer += more

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        fields = self._decoder.decode(block)
        new = None
        with self.cond:
            stream = self.streams.get(stream_id)
            if stream is None:
                if not self.server or stream_id % 2 == 0:
                    return  # a stream we reset and forgot
                stream = new = self.streams[stream_id] = Stream(self, stream_id, self._peer_initial)
            if stream.headers is None:
                stream.headers = fields
            else:
                stream.trailers = fields
            if flags & END_STREAM:
                stream.ended = True
            self.cond.notify_all()
        if new is not None and self.on_stream is not None:
            self.on_stream(new)

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self._owe(_frame(SETTINGS, ACK, 0, b""))
        elif kind == PING:
            if not flags & ACK:
                self._owe(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            with self.cond:
                if stream_id == 0:
                    self._peer_window += increment
                elif (stream := self.streams.get(stream_id)) is not None:
                    stream.send_window += increment
                self.cond.notify_all()
        elif kind == RST_STREAM:
            with self.cond:
                if (stream := self.streams.get(stream_id)) is not None:
                    stream.reset = int.from_bytes(payload[:4], "big")
                self.cond.notify_all()
        elif kind == GOAWAY:
            # Calls up to the last stream the peer names go on (a daemon stopping gracefully
            # lets running builds finish); later ones were never taken, and no new one starts.
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            with self.cond:
                self.going_away = last
                for stream in self.streams.values():
                    if stream.id > last and (stream.id % 2 == 1) != self.server:
                        stream.reset = 0x7  # REFUSED_STREAM
                self.cond.notify_all()
        elif kind == PUSH_PROMISE:
            raise H2Error("the peer pushed a stream, which was not allowed")

    def _settings(self, payload: bytes) -> None:
        with self.cond:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i : i + 6])
                if key == INITIAL_WINDOW_SIZE:
                    delta = value - self._peer_initial
                    self._peer_initial = value
                    for stream in self.streams.values():
                        stream.send_window += delta
                elif key == MAX_FRAME_SIZE:
                    self._peer_frame = value
            self.cond.notify_all()

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        data = _unpad(flags, payload)
        credit: list[tuple[int, int]] = []
        with self.cond:
            self._unacked += size
            if self._unacked > WINDOW // 2:
                credit.append((0, self._unacked))
                self._unacked = 0
            stream = self.streams.get(stream_id)
            if stream is not None and stream.reset is None:
                if data:
                    stream._chunks.append(data)
                stream._unacked += size
                if stream._unacked > WINDOW // 2 and not flags & END_STREAM:
                    credit.append((stream_id, stream._unacked))
                    stream._unacked = 0
                if flags & END_STREAM:
                    stream.ended = True
                self.cond.notify_all()
        for target, amount in credit:
            self._owe(_frame(WINDOW_UPDATE, 0, target, struct.pack(">I", amount)))


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return _header(len(payload), kind, flags, stream_id) + payload


def _header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big")


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise H2Error("a padded frame longer than itself")
    return payload[1 : len(payload) - payload[0]]
