"""What a DiffCopy runs over: a stream of fsutil packets in each direction.

Kept to two calls so the same code runs over a grpc.aio stream (FileSync/FileSend ``DiffCopy``)
and over in-memory queues in tests.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.session.errors import (
    DiffCopyError,
    InvalidStreamError,
    PeerClosedError,
    PeerError,
)

__all__ = [
    "DiffCopyError",
    "InvalidStreamError",
    "MemoryPacketStream",
    "PacketStream",
    "PeerClosedError",
    "PeerError",
    "Sent",
    "memory_pipe",
]

Packet = fsutil_pb2.Packet


class PacketStream(Protocol):
    """One side of a DiffCopy stream.

    ``recv`` returns None once the peer has closed its side. Whoever owns the transport closes
    our side after :func:`send_tree`/:func:`receive_tree` return (a gRPC handler by returning,
    a gRPC client with ``done_writing``); the receiver waits for that after the final FIN, as
    fsutil does.
    """

    async def send(self, packet: fsutil_pb2.Packet) -> None: ...

    async def recv(self) -> fsutil_pb2.Packet | None: ...


class Sent(NamedTuple):
    """A packet a :class:`MemoryPacketStream` sent, without its data (tests count these)."""

    type: int
    id: int
    path: str | None  #: the stat's path, for a PACKET_STAT that has one
    size: int  #: bytes of data


class MemoryPacketStream:
    """An in-process endpoint; packets are serialized on the way, as on a wire."""

    def __init__(self, tx: ObjectSendStream[bytes], rx: ObjectReceiveStream[bytes]) -> None:
        self._tx = tx
        self._rx = rx
        self.sent: list[Sent] = []

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        data = packet.SerializeToString()
        try:
            await self._tx.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise PeerClosedError("the peer closed the stream") from None
        path = packet.stat.path if packet.HasField("stat") else None
        self.sent.append(Sent(packet.type, packet.ID, path, len(packet.data)))

    async def recv(self) -> fsutil_pb2.Packet | None:
        try:
            data = await self._rx.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None
        return Packet.FromString(data)

    async def close(self) -> None:
        """Close this side: the peer's ``recv`` returns None and its pending sends fail."""
        await self._tx.aclose()
        await self._rx.aclose()


def memory_pipe(buffer: int = 64) -> tuple[MemoryPacketStream, MemoryPacketStream]:
    """Two connected endpoints; ``buffer`` packets may wait in each direction (``0``: none)."""
    size = math.inf if buffer < 0 else buffer
    a_tx, b_rx = anyio.create_memory_object_stream[bytes](size)
    b_tx, a_rx = anyio.create_memory_object_stream[bytes](size)
    return MemoryPacketStream(a_tx, a_rx), MemoryPacketStream(b_tx, b_rx)


class LockedStream:
    """Serializes sends from several tasks: a gRPC stream allows one write at a time."""

    def __init__(self, stream: PacketStream) -> None:
        self.stream = stream
        self._lock = anyio.Lock()

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        # Uncontended (most sends: a walk's stats), the lock is taken without a trip through
        # the event loop, which costs more than a batched send itself.
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            await self._lock.acquire()
        try:
            await self.stream.send(packet)
        finally:
            self._lock.release()

    async def recv(self) -> fsutil_pb2.Packet | None:
        return await self.stream.recv()
