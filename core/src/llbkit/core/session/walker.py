"""fsutil's walker: which entries of a directory a DiffCopy sends, in which order, with which stat.

A receiver numbers files by their place in the listing and diffs it against its own tree in the
same order, so the order (Go's ``filepath.Walk``: names sorted bytewise, parents first), the
filtering (include/exclude patterns, with a parent directory sent only once something below it
is) and each ``Stat`` must be what fsutil produces. Runs in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Generator, Sequence

from llbkit.core.fs.iterative import SortedWalk
from llbkit.core.fs.sendpatterns import (
    DESCEND,
    SEND,
    SKIP_DIR,
    SKIP_REST,
    SenderFilter,
    SenderPatterns,
    follow_links,
)
from llbkit.core.session import gomode
from llbkit.core.session.errors import DiffCopyError

__all__ = ["follow_links", "mkstat", "walk"]

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any

    from llbkit.core.api._pb import fsutil_pb2

    #: makes a stat from its fields (``path=``, ``mode=``...); fsutil's protobuf ``Stat``
    #: unless a caller that cannot afford the protobuf runtime passes one of the same shape
    StatMaker = Callable[..., Any]


def _protobuf_stat() -> StatMaker:
    from llbkit.core.api._pb import fsutil_pb2

    return fsutil_pb2.Stat


def _utf8(name: str, what: str) -> str:
    try:
        name.encode()
    except UnicodeEncodeError:
        shown = name.encode(errors="surrogateescape").decode(errors="replace")
        raise DiffCopyError(
            f"{what} {shown!r} is not valid UTF-8, which a DiffCopy stream cannot carry"
        ) from None
    return name


def mkstat(
    abspath: str,
    rel: str,
    st: os.stat_result,
    seen: dict[tuple[int, int], str] | None,
    *,
    xattrs: bool = True,
    make: StatMaker | None = None,
) -> fsutil_pb2.Stat:
    """The ``Stat`` fsutil sends for an entry; ``seen`` maps inodes to their first path, so
    later links to one name it in ``linkname``."""
    out: fsutil_pb2.Stat = (make or _protobuf_stat())(
        path=_utf8(rel, "path"),
        # Go clears the socket bit: a socket travels (and is recreated) as an empty file.
        mode=gomode.from_posix(st.st_mode) & ~gomode.MODE_SOCKET,
        uid=st.st_uid,
        gid=st.st_gid,
        modTime=st.st_mtime_ns,
    )
    if not stat.S_ISDIR(st.st_mode):
        # fsutil tests these bits, not the file type, so it reads rdev for symlinks too.
        if st.st_mode & (stat.S_IFBLK | stat.S_IFCHR):
            out.devmajor = gomode.go_major(st.st_rdev)
            out.devminor = gomode.go_minor(st.st_rdev)
        if seen is not None:
            key = (st.st_dev, st.st_ino)
            first = seen.get(key) if st.st_nlink > 1 else None
            if first is None:
                seen[key] = rel
            else:
                out.linkname = first
        out.size = st.st_size
        if stat.S_ISLNK(st.st_mode):
            out.linkname = _utf8(os.readlink(abspath), f"target of {rel!r}")
    if xattrs:
        _load_xattrs(abspath, out)
    return out


def _load_xattrs(abspath: str, out: fsutil_pb2.Stat) -> None:
    try:
        names = os.listxattr(abspath, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            out.xattrs[name] = os.getxattr(abspath, name, follow_symlinks=False)
        except OSError:
            continue  # gone since listing, or not readable by us: fsutil skips it too


# ---- the walk ----------------------------------------------------------------------------------


class _Walker:
    def __init__(self, patterns: SenderPatterns, *, xattrs: bool, make: StatMaker) -> None:
        self.filter = SenderFilter(patterns)
        self.xattrs = xattrs
        self.make = make
        self.seen: dict[tuple[int, int], str] = {}
        self.out: list[fsutil_pb2.Stat] = []

    def _stat(self, path: str, abspath: str, st: os.stat_result) -> fsutil_pb2.Stat:
        return mkstat(abspath, path, st, self.seen, xattrs=self.xattrs, make=self.make)

    def visit(self, path: str, abspath: str, st: os.stat_result | None, err: OSError | None) -> int:
        """One entry, as fsutil's walk callback treats it; appends what to send to ``out``."""
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        action = self.filter.decide(path, is_dir, (abspath, st), err)
        if action != SEND:
            return action
        assert st is not None
        try:
            entry = self._stat(path, abspath, st)
        except (FileNotFoundError, NotADirectoryError):
            # Vanished while walking: fsutil turns this into SkipDir.
            return SKIP_DIR if is_dir else SKIP_REST
        for parent, data in self.filter.send():
            given: tuple[str, os.stat_result] = data  # type: ignore[assignment]  # as visited
            parent_abs, parent_st = given
            self.out.append(self._stat(parent, parent_abs, parent_st))
        self.out.append(entry)
        return DESCEND


def _names(abspath: str) -> list[str]:
    return sorted(os.listdir(abspath))


def _resolve_root(root: str) -> str:
    """The directory walked: fsutil resolves the root's own symlinks first."""
    try:
        real = os.path.realpath(root, strict=True)
        if not stat.S_ISDIR(os.stat(real).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
    except OSError as err:
        raise DiffCopyError(f"cannot send {root}: {err.strerror}") from None
    return real


def walk(
    root: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    xattrs: bool = True,
    batch: int = 256,
    make: StatMaker | None = None,
) -> Generator[list[fsutil_pb2.Stat], None, None]:
    """The stats fsutil's ``Walk`` yields for ``root``, in lists of up to ``batch``.

    Blocking: iterate it in a worker thread. OSErrors other than entries vanishing propagate.
    """
    root = os.fspath(root)
    real = _resolve_root(root)
    walker = _Walker(
        SenderPatterns(root, include, exclude, follow_paths),
        xattrs=xattrs,
        make=make or _protobuf_stat(),
    )

    tree = SortedWalk(real, _names(real))
    for abspath, path in tree:
        err: OSError | None = None
        st: os.stat_result | None = None
        try:
            st = os.lstat(abspath)
        except FileNotFoundError:
            continue
        except OSError as lstat_err:
            err = lstat_err
        children: list[str] = []
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                children = _names(abspath)
            except FileNotFoundError:
                continue
            except OSError as read_err:
                err = read_err
        action = walker.visit(path, abspath, st, err)
        if action == SKIP_REST:
            tree.leave()
        elif action == DESCEND and st is not None and stat.S_ISDIR(st.st_mode):
            tree.enter(abspath, path, children)
        if len(walker.out) >= batch:
            yield walker.out
            walker.out = []
    if walker.out:
        yield walker.out
