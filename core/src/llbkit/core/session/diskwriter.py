"""The receiving side's filesystem work: diff a listing against ``dest`` and make ``dest`` match.

fsutil's diskwriter, with two differences that keep it safe for a mirror later builds hardlink
into: a file's data is written under a temporary name and renamed into place once complete
(never modified in place), and hardlinks are made once every file's data has arrived. Every
method blocks; the receiver calls them in worker threads, one batch at a time, never two at once
for the same batch of paths.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.fs.iterative import SortedWalk, rmtree, walk
from llbkit.core.fs.received import remember
from llbkit.core.session import gomode
from llbkit.core.session.stream import DiffCopyError, InvalidStreamError

__all__ = ["DiskWriter", "Filter"]

Stat = fsutil_pb2.Stat

#: may change a stat before it is compared and applied; False leaves the path alone
Filter = Callable[[str, fsutil_pb2.Stat], bool]

_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_MORE = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class _Old:
    """An entry ``dest`` held before the transfer, with what the metadata differ compares."""

    key: str
    path: str
    is_dir: bool
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str
    devmajor: int
    devminor: int


@dataclass(slots=True)
class _Pending:
    """A regular file whose data was requested."""

    stat: fsutil_pb2.Stat
    target: str
    #: the file its data goes to, made when it was requested
    tmp: str
    #: nothing was at ``target`` (no lookup needed before the rename)
    fresh: bool
    #: the content's sha256 so far, for the checksum that follows (``fs.received``)
    digest: Any = None


def _key(path: str) -> str:
    """Sort key giving fsutil's path order: ``/`` sorts before every other byte."""
    return path.replace("/", "\0")


def _remove_all(path: str) -> None:
    """``os.RemoveAll``: whatever is there, gone; read-only directories included."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    try:
        rmtree(path)
    except PermissionError:
        # A directory without write permission keeps its entries from a non-root user.
        for dirpath, dirnames, _ in walk(path):
            os.chmod(dirpath, 0o700)
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if not os.path.islink(sub):
                    os.chmod(sub, 0o700)
        rmtree(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class DiskWriter:
    """Applies a listing to ``dest``; see the module docstring for the order of things."""

    def __init__(
        self,
        dest: str,
        *,
        differ: str = "metadata",
        filter: Filter | None = None,
        merge: bool = False,
        temporaries: set[str] | None = None,
    ) -> None:
        self.dest = dest
        #: the temporary files that exist, also listed there for a process that may end
        #: without unwinding (the light client's Ctrl-C) to remove them
        self.temporaries = temporaries if temporaries is not None else set()
        self.differ = differ
        self.filter = filter
        self.merge = merge
        self.is_root = os.geteuid() == 0
        self.old: list[_Old] = []
        self._old_i = 0
        self._gone = ""  # an old directory removed or replaced: its old entries are gone too
        self.real_dirs: set[str] = {""}  # listing dirs known to be real directories in dest
        self.dirs: list[tuple[str, fsutil_pb2.Stat, bool]] = []  # (path, stat, widened)
        self.links: list[fsutil_pb2.Stat] = []
        self.pending: dict[int, _Pending] = {}
        #: paths made, replaced or removed: what a checksum of ``dest`` must look at again
        self.changed: set[str] = set()

    @property
    def empty(self) -> bool:
        """Whether :meth:`scan` has nothing to list (a merge, or an empty ``dest``)."""
        if self.merge:
            return True
        with os.scandir(self.dest) as entries:
            return next(entries, None) is None

    @property
    def nothing_to_remove(self) -> bool:
        """Whether applying can remove nothing: ``dest`` held nothing, and this is no merge
        into a directory that may hold anything."""
        return not self.old and not self.merge

    @property
    def little_to_finish(self) -> bool:
        """Whether :meth:`finish` is a few system calls."""
        return len(self.links) + len(self.dirs) <= 32

    # ---- the tree dest holds --------------------------------------------------------------

    def scan(self) -> None:
        """List ``dest`` as fsutil's walker would (hardlinks named by their first path)."""
        if self.merge:
            return
        seen: dict[tuple[int, int], str] = {}
        tree = SortedWalk(self.dest, sorted(os.listdir(self.dest)))
        for abspath, path in tree:
            try:
                st = os.lstat(abspath)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            linkname = ""
            if not is_dir:
                key = (st.st_dev, st.st_ino)
                first = seen.get(key) if st.st_nlink > 1 else None
                if first is None:
                    seen[key] = path
                else:
                    linkname = first
                if stat.S_ISLNK(st.st_mode):
                    linkname = os.readlink(abspath)
            dev = st.st_mode & (stat.S_IFBLK | stat.S_IFCHR) and not is_dir
            self.old.append(
                _Old(
                    key=_key(path),
                    path=path,
                    is_dir=is_dir,
                    mode=gomode.from_posix(st.st_mode) & ~gomode.MODE_SOCKET,
                    uid=st.st_uid,
                    gid=st.st_gid,
                    size=0 if is_dir else st.st_size,
                    mtime=st.st_mtime_ns,
                    linkname=linkname,
                    devmajor=gomode.go_major(st.st_rdev) if dev else 0,
                    devminor=gomode.go_minor(st.st_rdev) if dev else 0,
                )
            )
            if is_dir:
                tree.enter(abspath, path, sorted(os.listdir(abspath)))

    def _same(self, old: _Old, new: fsutil_pb2.Stat) -> bool:
        """fsutil's metadata differ. Owners we cannot set (not root) are not compared, or every
        sync would transfer every file again."""
        if self.differ == "none":
            return False
        if not old.is_dir and (old.size != new.size or old.mtime != new.modTime):
            return False
        owners = not self.is_root or (old.uid == new.uid and old.gid == new.gid)
        return (
            owners
            and old.mode == new.mode
            and old.devmajor == new.devmajor
            and old.devminor == new.devminor
            and old.linkname == new.linkname
        )

    # ---- applying the listing ---------------------------------------------------------------

    def apply(self, batch: Iterable[tuple[int, fsutil_pb2.Stat]], *, last: bool) -> list[int]:
        """Diff and apply one batch of the (validated) listing; return the ids whose data to
        request. ``last``: the listing is complete, so what ``dest`` still holds beyond it goes."""
        request: list[int] = []
        for file_id, incoming in batch:
            key = _key(incoming.path)
            old = self._advance(key)
            new = Stat()
            new.CopyFrom(incoming)
            keep = self.filter(new.path, new) if self.filter is not None else True
            is_dir = gomode.is_dir(new.mode)
            if old is not None and old.is_dir and not is_dir:
                self._gone = old.path + "/"
            parent = new.path.rpartition("/")[0]
            if not keep or parent not in self.real_dirs:
                continue  # filtered out, or below a directory that was
            if old is not None and self._same(old, new):
                if is_dir:
                    self.real_dirs.add(new.path)
                    self._keep_dir(new)
                continue
            self.changed.add(new.path)
            try:
                # Nothing is at a path the scan did not find (dest is ours while we apply).
                if self._apply(file_id, new, fresh=old is None and not self.merge):
                    request.append(file_id)
            except (ValueError, OverflowError) as err:  # numbers or names the OS refuses
                raise InvalidStreamError(f"invalid stat for {new.path!r}: {err}") from None
        if last:
            while self._old_i < len(self.old):
                self._delete(self.old[self._old_i])
                self._old_i += 1
        return request

    def _advance(self, key: str) -> _Old | None:
        """Delete old entries sorting before ``key``; the old entry at ``key``, if any."""
        old = self.old
        while self._old_i < len(old) and old[self._old_i].key < key:
            self._delete(old[self._old_i])
            self._old_i += 1
        if self._old_i < len(old) and old[self._old_i].key == key:
            self._old_i += 1
            return old[self._old_i - 1]
        return None

    def _delete(self, old: _Old) -> None:
        if self._gone and old.path.startswith(self._gone):
            return  # went with its directory; never touch a path below one we replaced
        self._gone = old.path + "/" if old.is_dir else ""
        if self.filter is not None and not self.filter(old.path, Stat()):
            return
        self.changed.add(old.path)
        _remove_all(self._abs(old.path))

    def _abs(self, path: str) -> str:
        return os.path.join(self.dest, path)

    def _tmp(self, path: str) -> str:
        head = os.path.dirname(self._abs(path))
        return os.path.join(head, f".llbkit-diffcopy-{os.urandom(8).hex()}")

    def _apply(self, file_id: int, new: fsutil_pb2.Stat, *, fresh: bool) -> bool:
        """Make one entry; True when its data is to be requested."""
        mode = new.mode
        target = self._abs(new.path)
        if gomode.is_dir(mode):
            try:
                is_real_dir = stat.S_ISDIR(os.lstat(target).st_mode)
            except FileNotFoundError:
                is_real_dir = False
            if not is_real_dir:
                _remove_all(target)
                os.mkdir(target, 0o700)
            self.real_dirs.add(new.path)
            self._keep_dir(new, widen=self._set_metadata(target, new, is_dir=True))
            return False
        if mode & (gomode.MODE_DEVICE | gomode.MODE_NAMED_PIPE):
            if mode & gomode.MODE_CHAR_DEVICE:
                kind = stat.S_IFCHR
            elif mode & gomode.MODE_NAMED_PIPE:
                kind = stat.S_IFIFO
            else:
                kind = stat.S_IFBLK
            tmp = self._tmp(new.path)
            try:
                os.mknod(tmp, kind | (mode & 0o777), os.makedev(new.devmajor, new.devminor))
            except PermissionError as err:
                raise DiffCopyError(f"cannot create device {new.path}: {err.strerror}") from None
            self.temporaries.add(tmp)
            self._place(tmp, target, new)
            return False
        if gomode.is_symlink(mode):
            tmp = self._tmp(new.path)
            os.symlink(new.linkname, tmp)
            self.temporaries.add(tmp)
            self._place(tmp, target, new)
            return False
        if new.linkname:
            _remove_if_dir(target)
            self.links.append(new)  # made once the file it links to is complete
            return False
        if not gomode.can_request_data(mode):
            raise InvalidStreamError(f"{new.path}: unsupported file mode {mode:#o}")
        if not fresh:
            _remove_if_dir(target)
        # Made now, as fsutil makes its files while the listing comes: a file's creation is
        # what its directory's lock serializes, and here it overlaps the writing of the files
        # requested before (the data then only opens and appends).
        tmp = self._tmp(new.path)
        os.close(os.open(tmp, _OPEN_NEW, 0o600))
        self.temporaries.add(tmp)
        self.pending[file_id] = _Pending(new, target, tmp, fresh)
        return True

    def _place(self, tmp: str, target: str, new: fsutil_pb2.Stat) -> None:
        try:
            self._set_metadata(tmp, new)
            _remove_if_dir(target)
            os.rename(tmp, target)
        except BaseException:
            _remove_all(tmp)
            raise
        finally:
            self.temporaries.discard(tmp)

    def _set_metadata(self, path: str | int, new: fsutil_pb2.Stat, *, is_dir: bool = False) -> bool:
        """fsutil's order: xattrs, owner, mode, times (chown would clear setuid set before it).
        True when a directory was left writable for us, its mode to be set at the end."""
        follow = isinstance(path, int)  # an open file: there is no link to follow or not
        for name, value in new.xattrs.items():
            # fsutil ignores failures too (a namespace we may not write, no support).
            with contextlib.suppress(OSError):
                os.setxattr(path, name, value, follow_symlinks=follow)
        if self.is_root:
            os.chown(path, new.uid, new.gid, follow_symlinks=follow)
        else:
            with contextlib.suppress(OSError):  # not a group of ours
                os.chown(path, -1, new.gid, follow_symlinks=follow)
        perm = gomode.to_posix_perm(new.mode)
        widen = is_dir and not self.is_root and perm & 0o700 != 0o700
        if not gomode.is_symlink(new.mode):
            os.chmod(path, perm | 0o700 if widen else perm)
        os.utime(path, ns=(new.modTime, new.modTime), follow_symlinks=follow)
        return widen

    def _keep_dir(self, new: fsutil_pb2.Stat, *, widen: bool = False) -> None:
        """Remember a directory whose times (and, if widened, mode) are set again at the end:
        what is written below it changes them."""
        if not widen and not self.is_root:
            perm = gomode.to_posix_perm(new.mode)
            if perm & 0o700 != 0o700:
                os.chmod(self._abs(new.path), perm | 0o700)
                widen = True
        self.dirs.append((new.path, new, widen))

    # ---- file data --------------------------------------------------------------------------

    def write(self, ops: list[tuple[int, bytes]]) -> int:
        """Append data to requested files (``b""`` ends one: it is finished and renamed into
        place); return how many files were finished."""
        fds: dict[int, int] = {}
        finished = 0
        try:
            for file_id, data in ops:
                pending = self.pending[file_id]
                fd = fds.get(file_id)
                if fd is None:
                    fd = fds[file_id] = os.open(pending.tmp, _OPEN_MORE)
                if pending.digest is None:
                    pending.digest = hashlib.sha256()
                if data:
                    _write_all(fd, data)
                    pending.digest.update(data)
                    continue
                self._set_metadata(fd, pending.stat)
                st = os.fstat(fd)
                remember(
                    (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size),
                    pending.digest.hexdigest(),
                )
                os.close(fds.pop(file_id))
                if not pending.fresh:
                    _remove_if_dir(pending.target)
                os.rename(pending.tmp, pending.target)
                self.temporaries.discard(pending.tmp)
                del self.pending[file_id]
                finished += 1
        finally:
            for fd in fds.values():
                os.close(fd)
        return finished

    # ---- the end ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Make the hardlinks, then give directories their final mode and times."""
        for new in self.links:
            tmp = self._tmp(new.path)
            try:
                os.link(self._abs(new.linkname), tmp, follow_symlinks=False)
            except FileNotFoundError:
                raise InvalidStreamError(
                    f"invalid link {new.path} to {new.linkname!r}: it was not received"
                ) from None
            self.temporaries.add(tmp)
            self._place(tmp, self._abs(new.path), new)
        for path, new, widen in reversed(self.dirs):
            target = self._abs(path)
            if widen:
                os.chmod(target, gomode.to_posix_perm(new.mode))
            os.utime(target, ns=(new.modTime, new.modTime), follow_symlinks=False)

    def cleanup(self) -> None:
        """After a failure or a cancel: remove the temporary files of transfers that did not
        complete."""
        for pending in self.pending.values():
            with contextlib.suppress(OSError):
                os.unlink(pending.tmp)
            self.temporaries.discard(pending.tmp)
        self.pending.clear()


def _remove_if_dir(path: str) -> None:
    """A directory where a non-directory goes is removed first (rename cannot replace it)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            _remove_all(path)
    except FileNotFoundError:
        pass
    except NotADirectoryError as err:
        raise DiffCopyError(f"{path}: {os.strerror(errno.ENOTDIR)}") from err
