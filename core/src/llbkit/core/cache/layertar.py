"""A store layer as the tar BuildKit's differ writes for the same change, so that the diff id
(and an image config naming it) is BuildKit's.

BuildKit compares the layer's tree with the one below it (containerd's double walk) and writes
what differs, depth first in name order: a directory whose mode and owners are the lower one's
is written only as the parent of something written (its time does not count), a file the same
as the lower one (mode, owners, size, time; the content when both times are whole seconds) not
at all, and a directory that replaced the lower one (an overlay opaque directory) as whiteouts
of each lower name it no longer has. A store layer can hold such unchanged entries (an overlay
upper copies a directory up when a mount point is made in it), so each entry is compared with
the lower layers here. Headers are Go's (``llbkit.core.gotar``): times cut to whole seconds, no
owner names, ``security.capability`` kept, sockets left out.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

from llbkit.core.gotar import GoTarWriter, Sink, whole_seconds
from llbkit.core.snapshot.layers import is_opaque, is_whiteout

__all__ = ["tar_layer"]

_WH = ".wh."
_OPQ = ".wh..wh..opq"
CAPABILITY = "security.capability"
_TYPES = {
    stat.S_IFDIR: tarfile.DIRTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
    stat.S_IFLNK: tarfile.SYMTYPE,
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
}

Below = list[tuple[str, os.stat_result]]  # one name in the lower layers, nearest first


def _capability(path: str) -> bytes:
    try:
        return os.getxattr(path, CAPABILITY, follow_symlinks=False)
    except OSError:
        return b""  # none, or a filesystem without extended attributes


def _lower_names(dirs: Sequence[str], fmt: str, wanted: set[str] | None) -> dict[str, Below]:
    """What the lower layers show in one directory (``dirs``, its paths in them, nearest
    first): each visible name with its paths, several for a directory merged from several
    layers. ``wanted`` limits the names looked at."""
    found: dict[str, Below] = {}
    closed: set[str] = set()  # names nothing further down shows
    for folder in dirs:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        hidden = set()
        for name in names:
            if fmt == "oci" and name.startswith(_WH):
                if name != _OPQ:
                    hidden.add(name[len(_WH) :])
                continue
            if name in closed or (wanted is not None and name not in wanted):
                continue
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if is_whiteout(path, st, fmt):  # an oci one was taken by its name above
                hidden.add(name)
                continue
            found.setdefault(name, []).append((path, st))
            if not stat.S_ISDIR(st.st_mode) or is_opaque(path, fmt):
                closed.add(name)
        closed |= hidden
        if is_opaque(folder, fmt):
            break
    return found


def _same(path: str, st: os.stat_result, lower: str, was: os.stat_result) -> bool:
    """Whether containerd's walk sees no change from ``lower`` to ``path``."""
    if (st.st_ino, st.st_dev) == (was.st_ino, was.st_dev):
        return True
    if (st.st_mode, st.st_uid, st.st_gid, st.st_rdev) != (
        was.st_mode,
        was.st_uid,
        was.st_gid,
        was.st_rdev,
    ):
        return False
    if _capability(path) != _capability(lower):
        return False
    if stat.S_ISDIR(st.st_mode):
        return True  # a directory's time and size do not count
    if st.st_size != was.st_size:
        return False
    seconds, nanos = divmod(st.st_mtime_ns, 10**9)
    was_seconds, was_nanos = divmod(was.st_mtime_ns, 10**9)
    if seconds != was_seconds or nanos != was_nanos:
        return False
    if nanos:
        return True
    # Times that may have lost their fraction: the content decides.
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path) == os.readlink(lower)
    return st.st_size == 0 or _same_content(path, lower)


def _same_content(path: str, lower: str) -> bool:
    with open(path, "rb") as one, open(lower, "rb") as other:
        while True:
            chunk = one.read(1 << 20)
            if chunk != other.read(1 << 20):
                return False
            if not chunk:
                return True


class _Writer:
    """Entries in order; directories unchanged from below are held back until something is
    written inside them (containerd's writer adds the parents of each entry)."""

    def __init__(self, out: Sink, epoch: int | None) -> None:
        self.tar = GoTarWriter(out)
        self.epoch = epoch
        self.held: list[tarfile.TarInfo | None] = []  # per open directory: its unwritten header
        self.inodes: dict[tuple[int, int], str] = {}  # the first path of each archived inode

    def _time(self, info: tarfile.TarInfo) -> None:
        if self.epoch is not None and info.mtime > self.epoch:
            info.mtime = self.epoch

    def add(self, info: tarfile.TarInfo, path: str | None = None) -> None:
        for n, parent in enumerate(self.held):
            if parent is not None:
                self._time(parent)
                self.tar.add(parent)
                self.held[n] = None
        self._time(info)
        if path is not None and info.isreg() and info.size:
            with open(path, "rb") as data:
                self.tar.add(info, data)
        else:
            self.tar.add(info)

    def whiteout(self, arc: str, mtime: int) -> None:
        folder, name = os.path.split(arc)
        info = tarfile.TarInfo(os.path.join(folder, _WH + name))
        info.mode = 0
        info.mtime = mtime
        self.add(info)

    def header(self, path: str, arc: str, st: os.stat_result) -> tarfile.TarInfo | None:
        mode = st.st_mode
        info = tarfile.TarInfo(arc)
        if stat.S_ISREG(mode):
            inode = (st.st_ino, st.st_dev)
            known = self.inodes.get(inode)
            if st.st_nlink > 1 and known is not None and known != arc:
                info.type, info.linkname = tarfile.LNKTYPE, known
            else:
                info.type, info.size = tarfile.REGTYPE, st.st_size
                if st.st_ino:
                    self.inodes[inode] = arc
        else:
            kind = _TYPES.get(stat.S_IFMT(mode))
            if kind is None:
                return None  # a socket: containerd's writer leaves it out
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = os.readlink(path)
        info.mode = mode
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = st.st_mtime_ns // 10**9
        info.uname = info.gname = ""
        if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if info.type != tarfile.SYMTYPE:
            capability = _capability(path)
            if capability:
                value = capability.decode("utf-8", "surrogateescape")
                info.pax_headers = {"SCHILY.xattr." + CAPABILITY: value}
        return info


def tar_layer(
    layer: Path, out: Sink, fmt: str, epoch: int | None, lowers: Sequence[Path] | None
) -> None:
    """Write ``layer`` as an image layer tar. ``lowers`` are the layers below it, nearest
    first; None when one of them has no files here (imported, not fetched): then every entry
    of the layer is written as it is, and an opaque directory as its ``.wh..wh..opq``."""
    _Walk(layer, _Writer(out, epoch), fmt, lowers).run()


class _Walk:
    """Depth first, in name order, without recursion (trees nest deeper than Python's stack)."""

    def __init__(
        self, layer: Path, writer: _Writer, fmt: str, lowers: Sequence[Path] | None
    ) -> None:
        self.layer = str(layer)
        self.writer = writer
        self.fmt = fmt
        self.known = lowers is not None
        self.lowers = [str(p) for p in lowers or ()]
        # Each open directory: its path in the layer, the names left, what is below them.
        self.stack: list[tuple[str, list[str], dict[str, Below]]] = []

    def run(self) -> None:
        self._enter("", None, self.lowers)
        self.writer.held[0] = None  # the root is never an entry
        while self.stack:
            rel, names, lower = self.stack[-1]
            if not names:
                self.stack.pop()
                self.writer.held.pop()
                continue
            self._visit(rel, names.pop(), lower)
        self.writer.tar.close()

    def _enter(self, rel: str, held: tarfile.TarInfo | None, dirs: list[str]) -> None:
        folder = os.path.join(self.layer, rel)
        oci = self.fmt == "oci"
        items = {n[len(_WH) :] if oci and n.startswith(_WH) else n for n in os.listdir(folder)}
        items.discard(_OPQ[len(_WH) :])
        opaque = is_opaque(folder, self.fmt)
        lower: dict[str, Below] = {}
        if self.known and dirs:
            lower = _lower_names(dirs, self.fmt, None if opaque else items)
            if opaque:
                items |= lower.keys()  # each name it hides becomes a whiteout
        elif opaque and rel and not self.known:
            items.add("")  # its marker, first
        self.writer.held.append(held)
        self.stack.append((rel, sorted(items, reverse=True), lower))

    def _gone(self, arc: str, st: os.stat_result) -> None:
        epoch = self.writer.epoch
        self.writer.whiteout(arc, epoch if epoch is not None else whole_seconds(st.st_mtime_ns))

    def _visit(self, rel: str, name: str, lower: dict[str, Below]) -> None:
        arc = f"{rel}/{name}" if rel else name
        folder = os.path.join(self.layer, rel)
        if name == "":
            marker = tarfile.TarInfo(f"{rel}/{_OPQ}")
            marker.mtime = os.lstat(folder).st_mtime_ns // 10**9
            self.writer.add(marker)
            return
        path = os.path.join(folder, name)
        was = lower.get(name)
        deleted = not self.known or bool(was)  # a deletion of nothing is not written
        mark = os.path.join(folder, _WH + name)
        if self.fmt == "oci" and os.path.lexists(mark):
            if deleted:
                self._gone(arc, os.lstat(mark))
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # a lower name an opaque directory no longer has
            self._gone(arc, os.lstat(folder))
            return
        if is_whiteout(path, st, self.fmt):
            if deleted:
                self._gone(arc, st)
            return
        unchanged = False
        if was:
            lower_path, lower_st = was[0]
            unchanged = _same(path, st, lower_path, lower_st)
        is_dir = stat.S_ISDIR(st.st_mode)
        if unchanged and not is_dir:
            return
        info = self.writer.header(path, arc, st)
        if info is None:
            return
        if not is_dir:
            self.writer.add(info, path)
            return
        if not unchanged:
            self.writer.add(info)
        below = [p for p, s in (was or []) if stat.S_ISDIR(s.st_mode)]
        self._enter(arc, info if unchanged else None, below)
