"""Writing a work tree's overlay upper directory before the overlay is mounted.

Files can only be hard-linked into an overlay's upper directory, not through the mount
(``EXDEV``), so the first copies of a fresh work tree run against the unmounted upper. Reads
see the upper over a read-only view of the chain below it (the upper starts empty, so that
view is the tree); a directory of the lower layers is copied up, as overlayfs copies it up,
before anything in it changes: created in the upper with the lower directory's mode, owner,
xattrs and times, its parent's times left as they were. Nothing here creates whiteouts: a
copy only adds and replaces entries. Anything a copy meets that this does not reproduce
exactly raises :class:`NeedsMount`, and the caller does the whole operation again on mounted
trees.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llbkit.core.fs.rootpath import SymlinkLoopError, resolve_parts
from llbkit.core.snapshot.layers import copy_xattrs

__all__ = ["NeedsMount", "Upper"]


class NeedsMount(Exception):
    """An unmounted upper cannot reproduce what the mounted tree would do here."""


class Upper:
    """An overlay upper directory ``upper`` to be mounted over the read-only tree ``lower``."""

    def __init__(self, upper: Path, lower: Path) -> None:
        self.upper = str(upper)
        self.lower = str(lower)
        #: directories known to be in the upper (a copy creates thousands of files in a few)
        self._ready = {self.upper}
        #: directories made in the upper where the lower has nothing: nothing below them either
        self._new: set[str] = set()

    def _rel(self, path: str) -> str:
        if path == self.upper:
            return ""
        if not path.startswith(self.upper + "/"):
            raise NeedsMount(path)
        return path[len(self.upper) + 1 :]

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry the mounted tree would show at ``path`` (a path in the upper)."""
        try:
            return os.lstat(path)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            return None
        if os.path.dirname(path) in self._new:
            return None
        try:
            return os.lstat(os.path.join(self.lower, self._rel(path)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, path: str) -> str:
        if os.path.lexists(path):
            return os.readlink(path)
        return os.readlink(os.path.join(self.lower, self._rel(path)))

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """:func:`~llbkit.core.fs.rootpath.resolve_in_root` in the tree the mount would show:
        ``path`` is a path in the tree; the result, the upper's path for it."""

        def is_link(host: str) -> bool:
            st = self.lstat(host)
            return st is not None and stat.S_ISLNK(st.st_mode)

        try:
            parts = resolve_parts(self.upper, path, is_link, self.readlink, follow_last)
        except SymlinkLoopError:
            raise NeedsMount(path) from None  # the mounted tree says why, in its own words
        return os.path.join(self.upper, *parts)

    def writable(self, path: str) -> None:
        """Make the directory ``path`` exist in the upper (copied up from the lower), with
        each of its parents, outermost first (a loop: a path may be thousands deep)."""
        missing: list[str] = []
        while path not in self._ready:
            if os.path.lexists(path):
                if not os.path.isdir(path) or os.path.islink(path):
                    raise NeedsMount(path)
                self._ready.add(path)
                break
            missing.append(path)
            path = os.path.dirname(path)
        for one in reversed(missing):
            self._copy_up(one)

    def _copy_up(self, path: str) -> None:
        parent = os.path.dirname(path)
        lower = os.path.join(self.lower, self._rel(path))
        try:
            st = os.lstat(lower)
        except OSError:
            raise NeedsMount(path) from None
        if not stat.S_ISDIR(st.st_mode):
            raise NeedsMount(path)
        pst = os.lstat(parent)
        os.mkdir(path, 0o700)
        copy_xattrs(lower, path, skip_overlay=True)
        os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.utime(parent, ns=(pst.st_atime_ns, pst.st_mtime_ns))
        self._ready.add(path)

    def made(self, path: str) -> None:
        """The directory ``path`` was just made in the upper, where the tree had nothing."""
        self._ready.add(path)
        self._new.add(path)

    def parent_writable(self, path: str) -> None:
        self.writable(os.path.dirname(path))

    def remove(self, path: str) -> None:
        """Remove the non-directory at ``path`` before an entry replaces it (an entry only in
        the lower is hidden by its replacement: no whiteout is needed)."""
        if os.path.lexists(path):
            os.unlink(path)
            self._ready.discard(path)
