"""Files a file op shares with its immutable inputs instead of copying them, and copy-up.

A copy whose result would be byte for byte and attribute for attribute its source (same owner,
mode, times, no xattrs) links the source's inode into the work tree: the new layer then costs a
directory entry, not the file's data. Such an inode also belongs to an input layer, so nothing
may ever write to it: before a later action of the op writes a file in place, :meth:`privatize`
gives the inode a private copy at every path of the tree that names it (keeping the tree's own
hard links, as a copy would have made them). Later steps write through overlay, which copies
the file up first, or into a copy of the layer (non-overlay stores), never into the layer.

Inodes are keyed by number alone: every layer and work tree of a store is on one filesystem
(linking across filesystems fails and the file is copied), and an overlay mount shows an upper
file's own inode number.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llbkit.core.fs.copydata import copy_data

__all__ = ["Borrowed", "keeps_source"]


def keeps_source(
    src: str, st: os.stat_result, mode: int, owner: tuple[int, int] | None, time_ns: int | None
) -> bool:
    """Whether a copy of the regular file ``src`` ending with ``mode``, ``owner`` (``None``:
    the source's) and times ``time_ns`` (``None``: the source's) would equal ``src`` itself."""
    if mode != stat.S_IMODE(st.st_mode):
        return False
    if owner is not None and owner != (st.st_uid, st.st_gid):
        return False
    if time_ns is not None and not (st.st_mtime_ns == st.st_atime_ns == time_ns):
        return False
    try:
        return not os.listxattr(src, follow_symlinks=False)
    except OSError:
        return False


class Borrowed:
    """The inodes of immutable inputs linked into one work tree, and the paths naming them.

    ``root`` is where the tree is now (an overlay upper before it is mounted, the mount after).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._paths: dict[int, list[str]] = {}
        #: which copier linked each inode first: a second copy gets its own file, as it would
        #: without sharing (the layer's tar must not turn it into a hard link)
        self._owner: dict[int, object] = {}
        #: the input the running copy reads, and the inodes the tree's base already holds
        self._source = -1
        self._blocked: frozenset[int] = frozenset()
        self._from: dict[int, set[int]] = {}

    def using(self, source: int, blocked: frozenset[int]) -> None:
        """The next links come from input ``source``; ``blocked`` inodes must be copied."""
        self._source = source
        self._blocked = blocked

    def claim(self, ino: int, copier: object) -> bool:
        """Whether ``copier`` may link ``ino`` into this tree."""
        if ino in self._blocked:
            return False
        return self._owner.setdefault(ino, copier) is copier

    def linked(self) -> dict[int, set[int]]:
        """The inodes the tree still shares, by the input they came from."""
        return {
            source: live
            for source, inodes in self._from.items()
            if (live := {i for i in inodes if i in self._paths})
        }

    @property
    def root(self) -> Path:
        return self._root

    @root.setter
    def root(self, root: Path) -> None:
        self._root = root
        self._prefix = f"{root}/"  # what add() strips, made once (a copy adds thousands)

    def add(self, ino: int, path: str) -> None:
        """Record that ``path`` (in the tree) now names the borrowed ``ino``."""
        prefix = self._prefix
        inside = path.startswith(prefix)
        rel = path[len(prefix) :] if inside else os.path.relpath(path, self._root)
        self._paths.setdefault(ino, []).append(rel)
        self._from.setdefault(self._source, set()).add(ino)

    def privatize(self, path: str) -> None:
        """Before ``path`` is written in place: if it names a borrowed inode, give every path of
        the tree naming that inode one private copy instead."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_ino in self._paths:
            self._copy_up(st.st_ino)

    def privatize_all(self) -> None:
        """Before an action that may write anywhere (unpacking an archive)."""
        for ino in list(self._paths):
            self._copy_up(ino)

    def _copy_up(self, ino: int) -> None:
        paths = [
            p
            for p in (os.path.join(self.root, rel) for rel in self._paths.pop(ino))
            if _names(p, ino)
        ]
        self._owner.pop(ino, None)
        if not paths:
            return
        first = paths[0]
        st = os.lstat(first)
        with _dir_times(first):
            tmp = _temporary(first)
            copy_data(first, tmp, st.st_size)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.rename(tmp, first)
        for other in paths[1:]:
            with _dir_times(other):
                tmp = _temporary(other)
                os.link(first, tmp)
                os.rename(tmp, other)


@contextmanager
def _dir_times(path: str) -> Iterator[None]:
    """Replacing a file must not touch its directory's times, as writing it in place would not."""
    parent = os.path.dirname(path)
    st = os.lstat(parent)
    yield
    os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _names(path: str, ino: int) -> bool:
    try:
        return os.lstat(path).st_ino == ino
    except OSError:
        return False


def _temporary(path: str) -> str:
    """A free name beside ``path`` (short: ``path``'s own name may be as long as allowed)."""
    head, tail = os.path.split(path)
    n = abs(hash(tail))
    while os.path.lexists(candidate := os.path.join(head, f".llbkit-cow-{n:x}")):
        n += 1
    return candidate
