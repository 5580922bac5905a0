"""DiffCopy end to end: a real tree sent and received over an in-memory stream."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.session import diffcopy_receive, diffcopy_send, gomode
from llbkit.core.session.diffcopy import CHUNK_SIZE, memory_pipe, receive_tree, send_tree

from .helpers import closing_after, snapshot, sync, xattrs_supported

Packet = fsutil_pb2.Packet
ROOT = os.geteuid() == 0
T0 = 1_600_000_000_123_456_789  # a fixed mtime with nanoseconds


def _times(root: Path, ns: int = T0) -> None:
    """Give every entry (deepest first, so parents keep theirs) a known mtime."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(ns, ns), follow_symlinks=False)
        ns += 1000


def _every_kind(src: Path) -> None:
    (src / "dir/sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "file.txt").write_text("hello\n")
    (src / "dir/sub/nested.txt").write_text("nested\n")
    (src / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "exe", 0o755)
    (src / "setuid").write_text("s")
    os.chmod(src / "setuid", 0o4755)
    (src / "setgid").write_text("g")
    os.chmod(src / "setgid", 0o2711)
    os.chmod(src / "empty", 0o1777)
    (src / "readonly").write_text("ro")
    os.chmod(src / "readonly", 0o444)
    (src / "closed").mkdir()
    (src / "closed/inside").write_text("in a read-only dir")
    os.chmod(src / "closed/inside", 0o400)
    os.link(src / "file.txt", src / "dir/hardlink")
    os.link(src / "file.txt", src / "zz-hardlink")
    os.symlink("../file.txt", src / "dir/symlink")
    os.symlink("/nowhere/at/all", src / "dangling")
    os.mkfifo(src / "fifo", 0o640)
    if xattrs_supported(src):
        os.setxattr(src / "file.txt", "user.note", b"kept")
        os.setxattr(src / "dir", "user.dir", b"on a dir")
    if ROOT:
        os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(src / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
        os.chown(src / "file.txt", 1234, 5678)
        os.chown(src / "dangling", 4321, 8765, follow_symlinks=False)
        os.chown(src / "dir/sub", 1000, 1000)
    _times(src)
    os.chmod(src / "closed", 0o555)


def test_every_kind_of_entry_arrives_as_it_was(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _every_kind(src)
    sync(src, dest)
    assert snapshot(dest) == snapshot(src)
    # the hardlinks really share the inode, and the mirror is not the source's inode
    assert os.stat(dest / "dir/hardlink").st_ino == os.stat(dest / "file.txt").st_ino
    assert os.stat(dest / "file.txt").st_ino != os.stat(src / "file.txt").st_ino
    mtime = os.stat(dest / "file.txt").st_mtime_ns
    assert mtime == os.stat(src / "file.txt").st_mtime_ns
    assert T0 <= mtime < T0 + 10**6  # nanoseconds kept
    # no temporary names are left behind
    assert not [p for p in dest.rglob("*") if p.name.startswith(".llbkit-diffcopy-")]


def test_stat_packets_are_numbered_and_shaped_as_fsutil_sends_them(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "a").mkdir(parents=True)
    (src / "a/b").write_text("b")
    (src / "a.txt").write_text("x" * 100)
    (src / "a-b").write_text("")
    os.link(src / "a.txt", src / "b-link")
    os.symlink("a.txt", src / "c-sym")
    os.mkfifo(src / "d-fifo")
    _times(src)
    run = sync(src, dest)
    # byte order, a directory's entries right after it ('/' sorts first), then the empty stat
    assert run.stats() == ["a", "a/b", "a-b", "a.txt", "b-link", "c-sym", "d-fifo", None]
    # requests name stats by their index among all stats: the regular files that have data
    assert sorted(run.requests()) == [1, 2, 3]
    assert run.sender[-1].type == Packet.PACKET_FIN
    assert run.receiver[-1].type == Packet.PACKET_FIN

    from llbkit.core.session.walker import walk

    stats = {s.path: s for batch in walk(src) for s in batch}
    assert stats["a"].mode == 0x800001ED  # Go's os.ModeDir (1<<31) | 0o755
    assert stats["a"].size == 0
    assert stats["a.txt"].mode == 0o644
    assert stats["a.txt"].modTime == os.lstat(src / "a.txt").st_mtime_ns
    assert stats["b-link"].linkname == "a.txt"  # a hardlink names the first path
    assert stats["b-link"].size == 100  # and keeps its size, as fsutil's mkstat does
    assert stats["c-sym"].mode == 0x080001FF  # os.ModeSymlink (1<<27) | 0o777
    assert stats["c-sym"].linkname == "a.txt"
    assert stats["c-sym"].size == len("a.txt")
    assert stats["d-fifo"].mode == 0x020001A4  # os.ModeNamedPipe (1<<25) | 0o644


def test_special_mode_bits_use_go_positions(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("")
    os.chmod(tmp_path / "s", 0o7755)
    from llbkit.core.session.walker import walk

    (entry,) = [s for batch in walk(tmp_path) for s in batch]
    # Go's os.ModeSetuid, ModeSetgid and ModeSticky: 1<<23, 1<<22, 1<<20
    assert entry.mode == 0x00D001ED
    assert gomode.to_posix_perm(entry.mode) == 0o7755


@pytest.mark.skipif(not ROOT, reason="making device nodes needs root")
def test_devices_carry_their_numbers(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    os.mknod(src / "tty", 0o620 | stat.S_IFCHR, os.makedev(4, 1))
    os.chmod(src / "tty", 0o620)  # not what the umask left
    from llbkit.core.session.walker import walk

    (entry,) = [s for batch in walk(src) for s in batch]
    assert entry.mode == 0x04200190  # os.ModeDevice (1<<26) | os.ModeCharDevice (1<<21) | 0o620
    assert (entry.devmajor, entry.devminor) == (4, 1)
    sync(src, dest)
    st = os.lstat(dest / "tty")
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (4, 1)


def test_a_second_sync_transfers_only_the_changed_file(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _every_kind(src)
    first = sync(src, dest)
    assert len(first.requests()) > 3

    unchanged = sync(src, dest)
    assert unchanged.requests() == []
    assert snapshot(dest) == snapshot(src)

    # a build layer hardlinked the mirrored file: replacing it must not change that copy
    layer = tmp_path / "layer-copy"
    os.link(dest / "dir/sub/nested.txt", layer)
    (src / "dir/sub/nested.txt").write_text("edited\n")
    changed = sync(src, dest)
    assert len(changed.requests()) == 1
    stats = changed.stats()
    assert stats[changed.requests()[0]] == "dir/sub/nested.txt"
    assert (dest / "dir/sub/nested.txt").read_text() == "edited\n"
    assert layer.read_text() == "nested\n"
    assert snapshot(dest) == snapshot(src)


def test_a_mode_or_mtime_change_alone_is_noticed(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "f").write_text("same")
    (src / "g").write_text("same")
    sync(src, dest)
    os.chmod(src / "f", 0o600)
    os.utime(src / "g", ns=(T0, T0))
    run = sync(src, dest)
    assert len(run.requests()) == 2
    assert snapshot(dest) == snapshot(src)


def test_vanished_entries_are_deleted(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "keep").mkdir(parents=True)
    (src / "keep/a").write_text("a")
    (src / "gone/deep/er").mkdir(parents=True)
    (src / "gone/deep/er/x").write_text("x")
    (src / "gone-file").write_text("g")
    os.symlink("keep", src / "gone-link")
    sync(src, dest)
    assert (dest / "gone/deep/er/x").exists()
    for path in ("gone/deep/er/x", "gone-file", "gone-link"):
        (src / path).unlink()
    for path in ("gone/deep/er", "gone/deep", "gone"):
        (src / path).rmdir()
    run = sync(src, dest)
    assert run.requests() == []
    assert sorted(p.name for p in dest.iterdir()) == ["keep"]
    assert snapshot(dest) == snapshot(src)


def test_a_file_becomes_a_directory_and_back(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "x").write_text("file first")
    (src / "y/deep").mkdir(parents=True)
    (src / "y/deep/z").write_text("z")
    (src / "y/w").write_text("w")
    sync(src, dest)

    (src / "x").unlink()
    (src / "x/inner").mkdir(parents=True)
    (src / "x/inner/f").write_text("now below a directory")
    for path in ("y/deep/z", "y/w"):
        (src / path).unlink()
    (src / "y/deep").rmdir()
    (src / "y").rmdir()
    (src / "y").write_text("a directory no more")
    os.symlink("x", src / "y-link")
    sync(src, dest)
    assert (dest / "x/inner/f").read_text() == "now below a directory"
    assert (dest / "y").read_text() == "a directory no more"
    assert snapshot(dest) == snapshot(src)


def test_a_directory_replaced_by_a_symlink_is_never_followed(tmp_path: Path) -> None:
    """Old entries below a directory that became a symlink must not be deleted through it."""
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    (src / "d").mkdir(parents=True)
    (src / "d/victim").write_text("mirror copy")
    outside.mkdir()
    (outside / "victim").write_text("must survive")
    sync(src, dest)
    (src / "d/victim").unlink()
    (src / "d").rmdir()
    os.symlink(str(outside), src / "d")
    sync(src, dest)
    assert os.readlink(dest / "d") == str(outside)
    assert (outside / "victim").read_text() == "must survive"


def test_differ_none_transfers_everything_again(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for name in "abc":
        (src / name).write_text(name)
    sync(src, dest)
    assert len(sync(src, dest).requests()) == 0
    assert len(sync(src, dest, differ="none").requests()) == 3


def test_merge_keeps_what_dest_already_holds(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "new").write_text("new")
    (dest / "old").write_text("old")
    (dest / "new").write_text("to be replaced")
    sync(src, dest, merge=True)
    assert (dest / "old").read_text() == "old"
    assert (dest / "new").read_text() == "new"


def test_filter_rewrites_stats_and_can_leave_paths_alone(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "skipped").mkdir(parents=True)
    (src / "skipped/below").write_text("never written")
    (src / "f").write_text("f")
    os.chmod(src / "f", 0o600)

    def only_some(path: str, st: fsutil_pb2.Stat) -> bool:
        st.mode |= 0o044  # as FileSend's client rewrites owners, here the mode
        return not path.startswith("skipped")

    sync(src, dest, filter=only_some)
    assert stat.S_IMODE(os.stat(dest / "f").st_mode) == 0o644
    assert not (dest / "skipped").exists()


def test_large_file_is_streamed_in_fsutil_chunks(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    size = 6 * 1024 * 1024 + 123
    block = os.urandom(1 << 20)
    with open(src / "big", "wb") as f:
        for _ in range(6):
            f.write(block)
        f.write(block[:123])
    run = sync(src, dest)
    assert CHUNK_SIZE == 32 * 1024  # fsutil's copy buffer
    data = [p.size for p in run.sender if p.type == Packet.PACKET_DATA]
    assert data[:-1] == [CHUNK_SIZE] * (size // CHUNK_SIZE) + [size % CHUNK_SIZE]
    assert data[-1] == 0  # the empty DATA that ends a file
    assert (dest / "big").read_bytes() == (src / "big").read_bytes()


def test_progress_counts_bytes_on_both_sides(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100_000)
    sent: list[tuple[int, bool]] = []
    received: list[tuple[int, bool]] = []
    a, b = memory_pipe(8)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(
                closing_after, a, send_tree(a, src, progress=lambda n, last: sent.append((n, last)))
            )
            group.start_soon(
                closing_after,
                b,
                receive_tree(b, dest, progress=lambda n, last: received.append((n, last))),
            )

    anyio.run(main)
    for calls in (sent, received):
        counts = [n for n, _ in calls]
        assert counts == sorted(counts)
        assert counts[-1] > 100_000
        assert [last for _, last in calls] == [False] * (len(calls) - 1) + [True]
    assert sent[-1][0] < received[-1][0]  # the receiver also counts the FIN it got


def test_a_big_tree_is_few_thread_hops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    for d in range(50):
        sub = src / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f:03}").write_text(f"{d}/{f}")
    hops = 0
    real = anyio.to_thread.run_sync

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal hops
        hops += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    for module in (diffcopy_send, diffcopy_receive):
        monkeypatch.setattr(module.anyio.to_thread, "run_sync", counting)
    run = sync(src, dest, buffer=64)
    assert len(run.requests()) == 5000
    assert hops < 500, hops
    assert snapshot(dest) == snapshot(src)


def test_what_was_received_is_summed_without_reading_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver hashes each file as its data arrives; the checksum that follows takes
    those digests and reads nothing back (but the second name of a hardlinked file: a digest
    is taken once), and comes out as a checksum that reads every file."""
    import hashlib

    from llbkit.core.fs.contenthash import ContentHasher
    from llbkit.core.fs.received import ReceivedDigests

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    _every_kind(src)
    (src / "big.bin").write_bytes(os.urandom(3 * CHUNK_SIZE + 5))
    sync(src, dest)
    expected = ContentHasher(dest).checksum("/")  # reads every file (no inode cache)
    sync(src, tmp_path / "again")
    reads: list[tuple[Any, ...]] = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: reads.append(a) or real(*a, **k))
    hasher = ContentHasher(tmp_path / "again", inode_cache=ReceivedDigests())
    assert hasher.checksum("/") == expected
    assert reads and all(os.stat(handle.name).st_nlink > 1 for handle, *_ in reads)
    # each digest is taken once: a second checksum reads the files
    assert (
        ContentHasher(tmp_path / "again", inode_cache=ReceivedDigests()).checksum("/") == expected
    )
    assert len(reads) >= 5


def test_a_cancelled_receive_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Cancelled (a client's Ctrl-C) while a file's data is arriving: its temporary file is
    removed, and while it existed it was listed in ``temporaries`` (which a process that
    leaves without unwinding removes)."""
    dest = tmp_path / "dest"
    dest.mkdir()
    temporaries: set[str] = set()
    seen: list[set[str]] = []

    async def main() -> None:
        ours, theirs = memory_pipe()
        big = fsutil_pb2.Stat(path="big", mode=0o644, size=1 << 20, modTime=T0)

        async def sender() -> None:
            await ours.send(Packet(type=Packet.PACKET_STAT, stat=big))
            await ours.send(Packet(type=Packet.PACKET_STAT))
            asked = await ours.recv()
            assert asked is not None and asked.type == Packet.PACKET_REQ
            await ours.send(Packet(type=Packet.PACKET_DATA, ID=asked.ID, data=b"x" * CHUNK_SIZE))
            while not list(dest.glob(".llbkit-diffcopy-*")):  # the data is being written
                await anyio.sleep(0.01)
            seen.append(set(temporaries))
            tg.cancel_scope.cancel()

        with anyio.fail_after(30):  # a regression must fail, not hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                tg.start_soon(
                    lambda: diffcopy_receive.receive_tree(theirs, dest, temporaries=temporaries)
                )

    anyio.run(main)
    assert seen and len(seen[0]) == 1 and next(iter(seen[0])).startswith(str(dest))
    assert os.listdir(dest) == [] and temporaries == set()
