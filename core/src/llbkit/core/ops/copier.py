"""Copying trees between snapshots with BuildKit's semantics (its ``fsutil/copy``).

Ownership is kept unless an owner is given, modes can be forced, times are kept or set, hard
links inside the copied tree stay hard links, xattrs follow, include/exclude patterns filter
what is copied while parent directories are created as needed. Every path is resolved inside
its root.

With ``borrow`` (the source is an immutable input), a regular file that would come out equal
to its source is hard-linked instead of copied (:mod:`llbkit.core.ops.borrow`). With an
``upper`` the destination is an overlay upper directory not mounted yet
(:mod:`llbkit.core.ops.upper`).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path

from llbkit.core.errors import UserError
from llbkit.core.fs.copydata import copy_data
from llbkit.core.fs.iterative import Steps, run
from llbkit.core.fs.rootpath import resolve_in_root
from llbkit.core.llb.modes import apply_symbolic
from llbkit.core.ops.borrow import Borrowed, keeps_source
from llbkit.core.ops.upper import NeedsMount, Upper
from llbkit.core.patterns import PatternMatcher
from llbkit.core.snapshot.layers import copy_xattrs

__all__ = ["CopyError", "Copier", "Owner", "mkdir_all", "set_owner", "set_times"]


class CopyError(UserError):
    """A copy that cannot be done as asked (a file over a directory...)."""


@dataclass(frozen=True)
class Owner:
    """Numeric owner for created files."""

    uid: int
    gid: int


def set_owner(path: str, owner: Owner | None, keep: os.stat_result | None = None) -> None:
    """``lchown`` to ``owner``, else to the owner of ``keep`` (the source), else leave it."""
    if owner is not None:
        os.lchown(path, owner.uid, owner.gid)
    elif keep is not None:
        os.lchown(path, keep.st_uid, keep.st_gid)


def set_times(path: str, ns: int | None, keep: os.stat_result | None = None) -> None:
    """Set atime and mtime to ``ns``, or copy them from ``keep``; never follows a symlink."""
    if ns is not None:
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    elif keep is not None:
        os.utime(path, ns=(keep.st_atime_ns, keep.st_mtime_ns), follow_symlinks=False)


def inside(root: str, path: str) -> str:
    """``path`` (on the host, under ``root``) as the build sees it: an error never names the
    host's directories."""
    rel = os.path.relpath(path, root)
    if rel == ".":
        return "/"
    return path if rel == ".." or rel.startswith("../") else "/" + rel


def mkdir_all(path: str, mode: int, owner: Owner | None, ns: int | None, *, root: str = "") -> None:
    """``mkdir -p``, at any depth; only the directories it creates get ``mode``, ``owner`` and
    times. ``root``: the tree ``path`` is in, named in errors."""
    missing: list[str] = []
    while not os.path.isdir(path):
        if os.path.lexists(path):
            shown = inside(root, path) if root else path
            raise CopyError(f"mkdir {shown}: not a directory")
        missing.append(path)
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            break
        path = parent
    for one in reversed(missing):
        try:
            os.mkdir(one, mode)
        except FileExistsError:
            if os.path.isdir(one):
                continue
            raise
        os.chmod(one, mode)
        set_owner(one, owner)
        set_times(one, ns)


@dataclass
class Copier:
    """One copy operation's settings; ``copy`` may be called for several sources."""

    owner: Owner | None = None
    mode: int | None = None
    #: a symbolic mode (``u+x,g-w``) applied to each copied entry's own mode
    mode_str: str = ""
    time_ns: int | None = None
    include: PatternMatcher | None = None
    exclude: PatternMatcher | None = None
    #: the destination tree's record of linked inodes, when the sources are immutable inputs
    borrow: Borrowed | None = None
    _inodes: dict[tuple[int, int], str] = field(default_factory=dict)
    _pending_parents: list[tuple[str, str, bool]] = field(default_factory=list)
    #: inodes this copier linked from its sources (their later paths link them too)
    _linked: set[tuple[int, int]] = field(default_factory=set)
    _no_links: bool = False
    _upper: Upper | None = None

    def copy(
        self,
        src_root: Path,
        src: str,
        dest_root: Path,
        dest: str,
        *,
        follow_links: bool = False,
        dir_contents: bool = False,
        upper: Upper | None = None,
        name_folder: bool = True,
    ) -> None:
        """Copy ``src`` (in ``src_root``) to ``dest`` (in ``dest_root``), as ``fsutil`` does.

        ``dest`` ending in ``/`` names a directory to copy into; a directory source is copied
        as itself unless ``dir_contents``. ``upper``: ``dest_root`` is that unmounted upper.
        ``name_folder``: a missing source whose folder is missing too is refused naming the
        folder, as BuildKit does when it has a tree to walk.
        """
        self._upper = upper
        self._root = str(dest_root)
        head, tail = os.path.split(dest)
        ensure = head if tail not in ("", ".") else dest
        if ensure:
            self._mkdir_all(self._resolve(dest_root, ensure))
        target = self._resolve(dest_root, os.path.normpath(dest))
        source = str(resolve_in_root(src_root, src, follow_last=follow_links))
        try:
            src_st = os.lstat(source)
        except FileNotFoundError:
            # BuildKit walks the source's folder first: a missing folder is what it names.
            folder = posixpath.dirname(posixpath.normpath("/" + src.lstrip("/")))
            if name_folder and folder != "/" and not os.path.lexists(os.path.dirname(source)):
                raise CopyError(f'"{folder}": not found') from None
            raise CopyError(f'"{src}": not found') from None
        dest_st = self._stat(target)
        src_dir = stat.S_ISDIR(src_st.st_mode)
        if (not dir_contents and src_dir and dest_st is not None) or (
            not src_dir and dest_st is not None and stat.S_ISDIR(dest_st.st_mode)
        ):
            target = os.path.join(target, os.path.basename(os.path.normpath(src)))
        parent = (
            target if (dir_contents and src_dir and dest_st is None) else os.path.dirname(target)
        )
        self._mkdir_all(parent)
        run(self._copy(source, "", target, top=True))

    # -- the destination: a directory, or an upper not mounted yet --------------------------

    def _resolve(self, root: Path, path: str) -> str:
        if self._upper is not None:
            return self._upper.resolve(path)
        return str(resolve_in_root(root, path))

    def _lstat(self, path: str) -> os.stat_result | None:
        if self._upper is not None:
            return self._upper.lstat(path)
        try:
            return os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _stat(self, path: str) -> os.stat_result | None:
        """``os.stat`` of an existing path (``path`` is resolved: an upper never meets a
        symlink here, and gives up if it does)."""
        if self._upper is None:
            return os.stat(path) if os.path.exists(path) else None
        st = self._upper.lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise NeedsMount(path)
        return st

    def _writable(self, path: str) -> None:
        """Before ``path`` (an existing directory) changes."""
        if self._upper is not None:
            self._upper.writable(path)

    def _creating(self, path: str) -> None:
        """Before an entry is created at ``path``."""
        if self._upper is not None:
            self._upper.parent_writable(path)

    def _shown(self, path: str) -> str:
        """A destination path as the build sees it."""
        return inside(self._upper.upper if self._upper is not None else self._root, path)

    def _mkdir_all(self, path: str) -> None:
        if self._upper is None:
            mkdir_all(path, 0o755, self.owner, self.time_ns, root=self._root)
            return
        upper = self._upper
        missing: list[str] = []
        while (st := upper.lstat(path)) is None:
            missing.append(path)
            path = os.path.dirname(path)
        if not stat.S_ISDIR(st.st_mode):
            raise NeedsMount(path)
        for one in reversed(missing):
            upper.parent_writable(one)
            os.mkdir(one, 0o755)
            upper.made(one)
            os.chmod(one, 0o755)
            set_owner(one, self.owner)
            set_times(one, self.time_ns)

    def _selected(self, rel: str) -> bool:
        if not rel:
            return True
        if self.include is not None and not self.include.matches(rel):
            return False
        return not (self.exclude is not None and self.exclude.matches(rel))

    def _copy(
        self, src: str, rel: str, target: str, *, top: bool, fresh: bool = False
    ) -> Steps[None]:
        """Copy one entry; a directory's entries through ``run``, so any depth. In a ``fresh``
        directory (made by this copy just now) nothing is there to replace."""
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            selected = self._selected(rel)
            if selected:
                self._create_parents()
            yield self._copy_dir(src, rel, target, st, selected=selected, top=top, fresh=fresh)
            return
        self._copy_other(src, rel, target, st, fresh=fresh)

    def _copy_other(
        self, src: str, rel: str, target: str, st: os.stat_result, *, fresh: bool
    ) -> None:
        """Copy one entry that is no directory (a plain call: a directory's thousands of files
        are not each a step of the walk)."""
        if not self._selected(rel):
            return
        if self._pending_parents and not self._pending_parents[-1][2]:
            self._create_parents()
        if not fresh:  # (in a directory this copy made, nothing is there to replace)
            old = self._lstat(target)
            if old is not None:
                if stat.S_ISDIR(old.st_mode):
                    raise CopyError(f"cannot replace to directory {self._shown(target)} with file")
                if self._upper is not None:
                    self._upper.remove(target)
                else:
                    os.unlink(target)
            self._creating(target)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            if self._copy_file(src, target, st):
                return  # the source's own inode: already all a copy would make it
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), target)
        else:
            os.mknod(target, mode, st.st_rdev)
        self._finish(src, target, st)

    def _copy_file(self, src: str, target: str, st: os.stat_result) -> bool:
        """Copy (or link) one regular file; whether ``target`` now shares the source's inode."""
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self._inodes:
            os.link(self._inodes[key], target)
            if key in self._linked and self.borrow is not None:
                self.borrow.add(st.st_ino, target)
                return True
            return False
        if self._link(src, target, st):
            self._linked.add(key)
            self._inodes[key] = target
            return True
        copy_data(src, target, st.st_size)
        if st.st_nlink > 1:
            self._inodes[key] = target
        return False

    def _link(self, src: str, target: str, st: os.stat_result) -> bool:
        """Link ``src`` as ``target`` when the copy would equal it; whether it did."""
        borrow = self.borrow
        if borrow is None or self._no_links:
            return False
        owner = None if self.owner is None else (self.owner.uid, self.owner.gid)
        if not keeps_source(src, st, self._mode(st), owner, self.time_ns):
            return False
        if not borrow.claim(st.st_ino, self):
            return False
        try:
            os.link(src, target)
        except OSError:
            # Another filesystem, an overlay mount, too many links...: copy from now on.
            self._no_links = True
            return False
        borrow.add(st.st_ino, target)
        return True

    def _copy_dir(
        self,
        src: str,
        rel: str,
        target: str,
        st: os.stat_result,
        *,
        selected: bool,
        top: bool,
        fresh: bool,
    ) -> Steps[None]:
        created = False
        if selected:
            created = self._make_dir(target, st, overwrite=not top, fresh=fresh)
        self._pending_parents.append((src, target, selected))
        # Joined by hand: os.path.join was a fifth of a large copy's time.
        src_dir = src if src.endswith("/") else f"{src}/"
        target_dir = target if target.endswith("/") else f"{target}/"
        rel_dir = f"{rel}/" if rel else ""
        with os.scandir(src) as it:
            # the type from the listing (no stat); a name is looked at again before it is used
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        try:
            for name, is_dir in entries:
                child = f"{src_dir}{name}"
                if not is_dir:
                    child_st = os.lstat(child)
                    if not stat.S_ISDIR(child_st.st_mode):
                        self._copy_other(
                            child,
                            f"{rel_dir}{name}",
                            f"{target_dir}{name}",
                            child_st,
                            fresh=created,
                        )
                        continue
                yield self._copy(
                    child, f"{rel_dir}{name}", f"{target_dir}{name}", top=False, fresh=created
                )
        finally:
            self._pending_parents.pop()
        if selected and (created or not top):
            self._writable(target)
            self._finish(src, target, st)
        elif selected and top:
            self._writable(target)
            set_times(target, self.time_ns, st)

    def _make_dir(
        self, target: str, st: os.stat_result, *, overwrite: bool, fresh: bool = False
    ) -> bool:
        old = None if fresh else self._lstat(target)
        if old is None:
            self._creating(target)
            os.mkdir(target, stat.S_IMODE(st.st_mode) | 0o700)
            if self._upper is not None:
                self._upper.made(target)
            return True
        if not stat.S_ISDIR(old.st_mode):
            raise CopyError(f"cannot copy to non-directory: {self._shown(target)}")
        if overwrite:
            self._writable(target)
            os.chmod(target, stat.S_IMODE(st.st_mode))
        return False

    def _create_parents(self) -> None:
        for i, (src, target, done) in enumerate(self._pending_parents):
            if done:
                continue
            st = os.stat(src)
            if self._make_dir(target, st, overwrite=False):
                self._finish(src, target, st)
            self._pending_parents[i] = (src, target, True)

    def _mode(self, st: os.stat_result) -> int:
        """The permission bits a copy of an entry with ``st`` ends with."""
        mode = stat.S_IMODE(st.st_mode)
        if self.mode is not None:
            return (mode & ~0o777) | (self.mode & 0o777)
        if self.mode_str:
            return apply_symbolic(mode, self.mode_str, stat.S_ISDIR(st.st_mode))
        return mode

    def _finish(self, src: str, target: str, st: os.stat_result) -> None:
        set_owner(target, self.owner, st)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, self._mode(st))
        copy_xattrs(src, target)
        set_times(target, self.time_ns, st)
