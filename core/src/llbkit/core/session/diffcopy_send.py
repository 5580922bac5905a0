"""The sending side of a DiffCopy: fsutil's ``Send``.

List the tree (every stat, then an empty one), answer each request for a file with its data in
32 KiB DATA packets and an empty DATA, and when the receiver says FIN, say FIN back.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.session import gomode
from llbkit.core.session._tasks import describe, run_together, take_batch
from llbkit.core.session.methods import CHUNK_SIZE
from llbkit.core.session.stream import (
    DiffCopyError,
    InvalidStreamError,
    LockedStream,
    PacketStream,
    PeerClosedError,
    PeerError,
)
from llbkit.core.session.walker import walk

__all__ = ["CHUNK_SIZE", "send_tree"]

Packet = fsutil_pb2.Packet

#: data read in one worker-thread call, across the files a worker has taken
_READ_BUDGET = 1 << 20
#: files one worker takes at once (small files: many in one thread call)
_TAKE = 256
#: fsutil answers requests with this many concurrent senders
_WORKERS = 4

Progress = Callable[[int, bool], None]


class _Job:
    """A requested file being read; opened on first read, closed at its end."""

    __slots__ = ("done", "fd", "id", "path")

    def __init__(self, file_id: int, path: str) -> None:
        self.id = file_id
        self.path = path
        self.fd: int | None = None
        self.done = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.done = True


def _open_regular(path: str) -> int | None:
    """The file, if it still is a regular file; fsutil sends just the end for one it cannot
    open. Not following a final symlink nor blocking on a FIFO that replaced the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _read(jobs: list[_Job]) -> list[tuple[_Job, list[bytes]]]:
    """Read on from each job until the budget is spent; closed jobs are complete."""
    budget = _READ_BUDGET
    out: list[tuple[_Job, list[bytes]]] = []
    for job in jobs:
        if budget <= 0:
            break
        chunks: list[bytes] = []
        out.append((job, chunks))
        if job.fd is None:
            fd = _open_regular(job.path)
            if fd is None:
                job.close()
                continue
            job.fd = fd
        while budget > 0:
            chunk = os.read(job.fd, CHUNK_SIZE)
            if not chunk:
                job.close()
                break
            chunks.append(chunk)
            budget -= len(chunk)
    return out


class _Sender:
    def __init__(self, stream: PacketStream, progress: Progress | None) -> None:
        self.stream = LockedStream(stream)
        self.progress = progress
        self.sent = 0
        self.root = ""
        self.files: dict[int, str] = {}  # id → path, until requested
        self.queue_tx, self.queue_rx = anyio.create_memory_object_stream[_Job](math.inf)

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        try:
            await self.stream.send(packet)
        except PeerClosedError:
            raise DiffCopyError("the receiver closed the stream before finishing") from None
        if self.progress is not None:
            self.sent += packet.ByteSize()
            self.progress(self.sent, False)

    async def list_tree(
        self, root: Path, include: Sequence[str], exclude: Sequence[str], follow: Sequence[str]
    ) -> None:
        self.root = await anyio.to_thread.run_sync(os.path.realpath, root)
        batches = walk(root, include=include, exclude=exclude, follow_paths=follow)
        file_id = 0
        try:
            while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
                for entry in batch:
                    if gomode.can_request_data(entry.mode):
                        self.files[file_id] = entry.path
                    file_id += 1
                    await self.send(Packet(type=Packet.PACKET_STAT, stat=entry))
        finally:
            batches.close()
        await self.send(Packet(type=Packet.PACKET_STAT))

    async def serve(self) -> None:
        """Answer the receiver until its FIN."""
        async with self.queue_tx:
            while True:
                packet = await self.stream.recv()
                if packet is None:
                    raise DiffCopyError("the receiver closed the stream before finishing")
                if packet.type == Packet.PACKET_ERR:
                    raise PeerError("receiver", packet.data.decode(errors="replace"))
                if packet.type == Packet.PACKET_REQ:
                    path = self.files.pop(packet.ID, None)
                    if path is None:
                        raise InvalidStreamError(f"invalid file id {packet.ID}")
                    await self.queue_tx.send(_Job(packet.ID, os.path.join(self.root, path)))
                elif packet.type == Packet.PACKET_FIN:
                    await self.stream.send(Packet(type=Packet.PACKET_FIN))
                    return

    async def work(self, queue: MemoryObjectReceiveStream[_Job]) -> None:
        async with queue:
            async for first in queue:
                jobs = await take_batch(queue, first, limit=_TAKE)
                try:
                    while jobs:
                        for job, chunks in await anyio.to_thread.run_sync(_read, jobs):
                            for chunk in chunks:
                                await self.send(
                                    Packet(type=Packet.PACKET_DATA, ID=job.id, data=chunk)
                                )
                            if job.done:
                                await self.send(Packet(type=Packet.PACKET_DATA, ID=job.id))
                        jobs = [job for job in jobs if not job.done]
                finally:
                    for job in jobs:
                        job.close()


async def send_tree(
    stream: PacketStream,
    root: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    progress: Progress | None = None,
) -> None:
    """Send the tree at ``root`` as fsutil's ``Send`` does, until the receiver's FIN.

    ``include``/``exclude`` are Docker-style patterns; ``follow_paths`` name symlinks whose
    targets are sent too. ``progress(bytes_sent, last)`` is called as packets go. A failure is
    reported to the receiver as a PACKET_ERR and raised (an error the receiver reported is
    raised as :class:`PeerError`).
    """
    sender = _Sender(stream, progress)
    workers = [sender.queue_rx.clone() for _ in range(_WORKERS)]
    sender.queue_rx.close()
    try:
        await run_together(
            lambda: sender.list_tree(Path(root), include, exclude, follow_paths),
            sender.serve,
            *(lambda q=q: sender.work(q) for q in workers),
        )
    except Exception as err:
        if not isinstance(err, PeerError):
            with anyio.move_on_after(10, shield=True):
                # If the peer is gone, the error raised below still says what happened.
                with contextlib.suppress(Exception):
                    await sender.stream.send(
                        Packet(type=Packet.PACKET_ERR, data=describe(err).encode())
                    )
        if isinstance(err, OSError):
            raise DiffCopyError(describe(err)) from err
        raise
    finally:
        for queue in workers:
            queue.close()
        if progress is not None:
            progress(sender.sent, True)
