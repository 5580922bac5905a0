"""The receiving side of a DiffCopy: fsutil's ``Receive``.

Every stat is checked as it arrives (a sender is not trusted to stay inside ``dest``), the
listing is diffed against ``dest`` and applied in batches in a worker thread, changed files are
requested and their data written as it comes; once everything is in place, FIN is sent and the
sender's FIN awaited.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import anyio
from anyio.lowlevel import checkpoint

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.patterns import clean
from llbkit.core.session import gomode
from llbkit.core.session._tasks import describe, run_together, take_batch
from llbkit.core.session.diskwriter import DiskWriter, Filter
from llbkit.core.session.stream import (
    DiffCopyError,
    InvalidStreamError,
    LockedStream,
    PacketStream,
    PeerError,
)

__all__ = ["Differ", "Validator", "receive_tree"]

Packet = fsutil_pb2.Packet
Differ = Literal["metadata", "none"]
Progress = Callable[[int, bool], None]
T = TypeVar("T")

#: stats applied in one worker-thread call
_APPLY_BATCH = 512
#: data written in one worker-thread call
_WRITE_BATCH = 1 << 20
#: DATA packets waiting for the writer before the reader stops reading
_DATA_QUEUE = 64


class Validator:
    """fsutil's checks on a listing: clean relative paths, no way out of the destination, each
    directory before its entries, names in order without duplicates, and hardlinks only to a
    file listed before."""

    def __init__(self) -> None:
        self._open: list[list[str]] = [["", ""]]  # [directory, last name seen in it]
        self._files: set[str] = set()

    def check(self, entry: fsutil_pb2.Stat) -> None:
        path = entry.path
        if not path or "\0" in path:
            raise InvalidStreamError(f"invalid path {path!r} in the file list")
        if path.startswith("/"):
            raise InvalidStreamError(f"absolute path {path!r} in the file list")
        if clean(path) != path:
            raise InvalidStreamError(f"unclean path {path!r} in the file list")
        if path in (".", "..") or path.startswith("../"):
            raise InvalidStreamError(f"path {path!r} escapes the destination")
        if "\0" in entry.linkname or any("\0" in name for name in entry.xattrs):
            raise InvalidStreamError(f"invalid link target or xattr name for {path!r}")
        parent, _, name = path.rpartition("/")
        stack = self._open
        while len(stack) > 1 and not (
            parent == stack[-1][0] or parent.startswith(stack[-1][0] + "/")
        ):
            stack.pop()
        top = stack[-1]
        if top[0] != parent or top[1] >= name:
            after = f"{top[0]}/{top[1]}" if top[0] else top[1]
            raise InvalidStreamError(f"file list out of order: {path!r} after {after!r}")
        top[1] = name
        mode = entry.mode
        if gomode.is_dir(mode):
            stack.append([path, ""])
        elif not gomode.is_symlink(mode):
            if not entry.linkname:
                self._files.add(path)
            elif entry.linkname not in self._files:
                raise InvalidStreamError(
                    f"invalid link {path!r} to {entry.linkname!r}: not a file listed before it"
                )


class _Receiver:
    def __init__(self, stream: PacketStream, writer: DiskWriter, progress: Progress | None) -> None:
        self.stream = LockedStream(stream)
        self.writer = writer
        self.progress = progress
        self.received = 0
        self.validator = Validator()
        self.open_ids: set[int] = set()  # requested, data not complete yet
        self.requested = 0
        self.finished = 0
        self.fin_sent = False
        self._written = anyio.Event()
        self.stats_tx, self.stats_rx = anyio.create_memory_object_stream[
            tuple[int, fsutil_pb2.Stat] | None
        ](math.inf)
        self.data_tx, self.data_rx = anyio.create_memory_object_stream[tuple[int, bytes]](
            _DATA_QUEUE
        )

    async def read(self) -> None:
        """Everything the sender says, until its FIN (then what follows, until it closes)."""
        async with self.stats_tx, self.data_tx:
            file_id = 0
            listed = False
            while True:
                packet = await self.stream.recv()
                if packet is None:
                    raise DiffCopyError("the sender closed the stream before finishing")
                if self.progress is not None:
                    self.received += packet.ByteSize()
                    self.progress(self.received, False)
                kind = packet.type
                if kind == Packet.PACKET_ERR:
                    raise PeerError("sender", packet.data.decode(errors="replace"))
                if kind == Packet.PACKET_STAT:
                    if listed:
                        raise InvalidStreamError("a stat after the end of the file list")
                    if not packet.HasField("stat"):
                        listed = True
                        self.stats_tx.send_nowait(None)
                        continue
                    self.validator.check(packet.stat)
                    # The listing's queue is unbounded: no wait, and no checkpoint per stat
                    # (a listing of 5,000 files spent a tenth of a second on them).
                    self.stats_tx.send_nowait((file_id, packet.stat))
                    file_id += 1
                elif kind == Packet.PACKET_DATA:
                    if packet.ID not in self.open_ids:
                        raise InvalidStreamError(f"invalid file request {packet.ID}")
                    if not packet.data:
                        self.open_ids.discard(packet.ID)
                    await self.data_tx.send((packet.ID, packet.data))
                elif kind == Packet.PACKET_FIN:
                    if not self.fin_sent:
                        raise InvalidStreamError("the sender finished before the receiver")
                    break
        try:
            while await self.stream.recv() is not None:
                pass
        except Exception:
            pass  # everything is in place: how the transport ends no longer matters

    async def apply(self) -> None:
        """Diff and apply the listing as it comes, request what changed, FIN when all is in."""
        async with self.stats_rx:
            await _off_loop(self.writer.scan, small=self.writer.empty)
            last = False
            while not last:
                try:
                    first = await self.stats_rx.receive()
                except anyio.EndOfStream:
                    return  # the reader failed; its error is the one reported
                items = await take_batch(self.stats_rx, first, limit=_APPLY_BATCH)
                last = items[-1] is None  # the end of the listing comes last, if at all
                batch = [item for item in items if item is not None]
                ids = await _off_loop(
                    functools.partial(self.writer.apply, batch, last=last),
                    # Nothing of an old tree to remove (that may be a whole directory).
                    small=len(batch) <= _INLINE_ENTRIES and self.writer.nothing_to_remove,
                )
                self.open_ids.update(ids)
                self.requested += len(ids)
                for file_id in ids:
                    await self.stream.send(Packet(type=Packet.PACKET_REQ, ID=file_id))
        while self.finished < self.requested:
            self._written = anyio.Event()
            await self._written.wait()
        await _off_loop(self.writer.finish, small=self.writer.little_to_finish)
        self.fin_sent = True
        await self.stream.send(Packet(type=Packet.PACKET_FIN))

    async def write(self) -> None:
        """File data, in batches: many small files or a large file's chunks per thread call."""
        async with self.data_rx:
            async for first in self.data_rx:
                # An empty DATA weighs something: a batch of small files ends too.
                ops = await take_batch(
                    self.data_rx, first, limit=_WRITE_BATCH, weight=lambda op: len(op[1]) + 512
                )
                small = len(ops) <= _INLINE_ENTRIES and sum(len(d) for _, d in ops) <= _INLINE_BYTES
                self.finished += await _off_loop(functools.partial(self.writer.write, ops), small)
                self._written.set()


async def receive_tree(
    stream: PacketStream,
    dest: Path,
    *,
    differ: Differ = "metadata",
    filter: Filter | None = None,
    progress: Progress | None = None,
    merge: bool = False,
    temporaries: set[str] | None = None,
) -> set[str]:
    """Make ``dest`` hold the tree a sender streams, as fsutil's ``Receive`` does; return the
    paths it made, replaced or removed.

    ``differ="metadata"`` transfers only files whose size, mtime, mode, owner or link differ
    from what ``dest`` holds; ``"none"`` transfers everything. ``filter(path, stat)`` may change
    a stat first, or return False to leave the path alone. ``merge`` keeps what ``dest`` holds
    beyond the listing (fsutil's ``Merge``, used when exporting into a client directory).
    ``temporaries``, when given, lists the temporary files in ``dest`` while they exist.
    ``progress(bytes_received, last)`` is called as packets come. A failure is reported to the
    sender as a PACKET_ERR and raised; nothing is ever written outside ``dest``.
    """
    if differ not in ("metadata", "none"):
        raise ValueError(f"unknown differ {differ!r}: expected 'metadata' or 'none'")
    dest_dir = _prepare(Path(dest))  # a directory made, a path resolved: no thread for that
    writer = DiskWriter(
        dest_dir, differ=differ, filter=filter, merge=merge, temporaries=temporaries
    )
    receiver = _Receiver(stream, writer, progress)
    try:
        await run_together(receiver.read, receiver.apply, receiver.write)
        return writer.changed
    except Exception as err:
        with anyio.move_on_after(10, shield=True):
            await anyio.to_thread.run_sync(writer.cleanup)
            if not isinstance(err, PeerError):
                # If the peer is gone, the error raised below still says what happened.
                with contextlib.suppress(Exception):
                    await receiver.stream.send(
                        Packet(type=Packet.PACKET_ERR, data=describe(err).encode())
                    )
        if isinstance(err, OSError):
            raise DiffCopyError(describe(err)) from err
        raise
    except anyio.get_cancelled_exc_class():
        # No thread writes now (anyio waits for the ones it runs): nothing is left behind.
        # (A KeyboardInterrupt raised in this thread gives no such promise: left alone.)
        writer.cleanup()
        raise
    finally:
        if progress is not None:
            progress(receiver.received, True)


#: below these a step of the writer runs on the event loop: a thread's round trip costs about
#: 0.1 ms, more than the step (a build through a daemon reads its Dockerfile in four syncs of a
#: few entries each, a hundred round trips in all)
_INLINE_ENTRIES = 16
_INLINE_BYTES = 64 * 1024


async def _off_loop(work: Callable[[], T], small: bool) -> T:
    """``work`` in a worker thread, or right here when it is small."""
    if small:
        await checkpoint()
        return work()
    return await anyio.to_thread.run_sync(work)


def _prepare(dest: Path) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    return os.path.realpath(dest)
