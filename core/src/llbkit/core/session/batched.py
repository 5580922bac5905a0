"""fsutil's packets carried many to a gRPC message (llbkit's ``FileSyncBatched``; see
``api/_pb/packets.proto``).

Packets a DiffCopy side sends are appended to one buffer; the buffer goes out when it is large,
or as soon as the side has nothing more to add right away (a helper task runs whenever every
producer waits), so a request still gets its answer without delay and a walk of 5,000 files
leaves in a handful of messages instead of 5,000. The packets, their order and their meaning are
exactly FileSync's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from llbkit.core.api._pb import fsutil_pb2, packets_pb2
from llbkit.core.api.protowire import LEN, key, varint
from llbkit.core.session.methods import BATCHED_FILE_SEND, BATCHED_FILE_SYNC, FLUSH_AT

__all__ = [
    "BATCHED_FILE_SEND",
    "BATCHED_FILE_SYNC",
    "FLUSH_AT",
    "BatchedPackets",
    "batched_packets",
]

_FIELD_ONE = key(1, LEN)


class BatchedPackets:
    """A packet stream (``send``/``recv`` of fsutil packets) over a call of ``Packets``.

    :param write: sends one encoded ``Packets`` message.
    :param read: the next ``Packets`` message, or ``None`` at the end of the call.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        read: Callable[[], Awaitable[packets_pb2.Packets | None]],
    ) -> None:
        self._write = write
        self._read = read
        self._buffer = bytearray()
        self._lock = anyio.Lock()
        self._waiting = anyio.Event()
        self._received: collections.deque[fsutil_pb2.Packet] = collections.deque()

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        data = packet.SerializeToString()
        self._buffer += _FIELD_ONE + varint(len(data))  # one element of field 1, ``packets``
        self._buffer += data
        if len(self._buffer) >= FLUSH_AT:
            await self.flush()
        elif not self._waiting.is_set():
            self._waiting.set()

    async def flush(self) -> None:
        """Send what is buffered (taken under the lock, so messages keep their order)."""
        async with self._lock:
            if not self._buffer:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
            await self._write(data)

    async def recv(self) -> fsutil_pb2.Packet | None:
        while not self._received:
            message = await self._read()
            if message is None:
                return None
            self._received.extend(message.packets)
        return self._received.popleft()

    async def _flusher(self) -> None:
        while True:
            await self._waiting.wait()
            self._waiting = anyio.Event()
            # Wait while producers that are ready keep adding (a producer that yields between
            # packets adds one each turn); send once a whole turn adds nothing.
            size = -1
            while size != len(self._buffer) and len(self._buffer) < FLUSH_AT:
                size = len(self._buffer)
                await anyio.sleep(0)
            await self.flush()


@contextlib.asynccontextmanager
async def batched_packets(
    write: Callable[[bytes], Awaitable[None]],
    read: Callable[[], Awaitable[packets_pb2.Packets | None]],
) -> AsyncIterator[BatchedPackets]:
    """A :class:`BatchedPackets` whose buffer is sent when its user pauses, and at the end."""
    stream = BatchedPackets(write, read)
    # A plain task, not a task group: the user's own error must reach its caller unwrapped.
    flusher = asyncio.ensure_future(stream._flusher())
    try:
        yield stream
    except Exception:
        # What was said before the failure (the ERR packet that explains it) still goes out.
        with contextlib.suppress(Exception):
            await stream.flush()
        raise
    else:
        await stream.flush()
    finally:
        flusher.cancel()
        # A failed write shows to the user's own next send, receive or final flush.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await flusher
