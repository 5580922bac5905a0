"""Running both sides of a DiffCopy in one process, and comparing trees."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.session.diffcopy import (
    MemoryPacketStream,
    Sent,
    memory_pipe,
    receive_tree,
    send_tree,
)

Packet = fsutil_pb2.Packet


class Run:
    """What each side sent during one transfer."""

    def __init__(self, sender: list[Sent], receiver: list[Sent]) -> None:
        self.sender = sender
        self.receiver = receiver

    def requests(self) -> list[int]:
        return [p.id for p in self.receiver if p.type == Packet.PACKET_REQ]

    def stats(self) -> list[str | None]:
        return [p.path for p in self.sender if p.type == Packet.PACKET_STAT]


async def closing_after(side: MemoryPacketStream, work: Awaitable[None]) -> None:
    try:
        await work
    finally:
        await side.close()


def sync(src: Path, dest: Path, *, buffer: int = 8, **opts: Any) -> Run:
    """Send ``src`` into ``dest``; ``opts`` go to ``send_tree`` or ``receive_tree`` by name."""
    send_opts = {k: opts.pop(k) for k in ("include", "exclude", "follow_paths") if k in opts}
    a, b = memory_pipe(buffer)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(closing_after, a, send_tree(a, src, **send_opts))
            group.start_soon(closing_after, b, receive_tree(b, dest, **opts))

    anyio.run(main)
    return Run(a.sent, b.sent)


def run_pair(
    first: Callable[[MemoryPacketStream], Awaitable[None]],
    second: Callable[[MemoryPacketStream], Awaitable[None]],
) -> tuple[Exception | None, Exception | None]:
    """Run two sides against each other to the end, each closing its side when done; return
    each side's error (one side failing does not cancel the other, as across a network)."""
    a, b = memory_pipe(8)
    errors: list[Exception | None] = [None, None]

    async def side(i: int, stream: MemoryPacketStream, work: Awaitable[None]) -> None:
        try:
            await closing_after(stream, work)
        except Exception as err:
            errors[i] = err

    async def main() -> None:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(side, 0, a, first(a))
                group.start_soon(side, 1, b, second(b))

    anyio.run(main)
    return errors[0], errors[1]


def xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    finally:
        probe.unlink()
    return True


def snapshot(root: Path, *, dir_times: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything a transfer should carry over, per path: type and mode, owner, size, mtime,
    link target, content digest, which paths share an inode, device numbers, user xattrs."""
    out: dict[str, tuple[object, ...]] = {}
    first_of: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            digest = link = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(full)
            group = ""
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                group = first_of.setdefault(st.st_ino, rel)
            try:
                attrs = sorted(
                    (k, os.getxattr(full, k, follow_symlinks=False))
                    for k in os.listxattr(full, follow_symlinks=False)
                    if k.startswith("user.")
                )
            except OSError:
                attrs = []
            is_dir = stat.S_ISDIR(st.st_mode)
            out[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                0 if is_dir else st.st_size,
                st.st_mtime_ns if dir_times or not is_dir else 0,
                link,
                digest,
                group,
                st.st_rdev,
                tuple(attrs),
            )
    return out
