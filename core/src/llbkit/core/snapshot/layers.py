"""Layers as directories: applying them onto a tree, measuring them, and diffing two trees.

A layer holds what one step changed. Deletions are whiteouts in one of two on-disk forms,
fixed per store: ``overlay`` (a 0/0 character device, ``trusted.overlay.opaque=y`` on a
directory whose lower contents are hidden), which lets a chain be mounted as is, and ``oci``
(``.wh.<name>`` files and ``.wh..wh..opq``), used where overlay mounts are not possible.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from llbkit.core.fs.copydata import copy_data
from llbkit.core.fs.iterative import Steps, rmtree, run

__all__ = [
    "OPAQUE_XATTR",
    "apply_layer",
    "copy_entry",
    "copy_xattrs",
    "diff_trees",
    "disk_blocks",
    "has_whiteouts",
    "is_opaque",
    "is_whiteout",
    "make_whiteout",
]

OPAQUE_XATTR = "trusted.overlay.opaque"
_WH = ".wh."
_OPQ = ".wh..wh..opq"


def is_whiteout(entry: os.DirEntry[str] | str, st: os.stat_result, fmt: str) -> bool:
    """Whether a layer entry marks a deletion."""
    if fmt == "overlay":
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    if fmt == "plain":
        return False
    name = entry if isinstance(entry, str) else entry.name
    return os.path.basename(name).startswith(_WH)


def make_whiteout(parent: str, name: str, fmt: str) -> None:
    """Record the deletion of ``parent/name`` in a layer."""
    if fmt == "overlay":
        os.mknod(os.path.join(parent, name), stat.S_IFCHR | 0o000, os.makedev(0, 0))
    else:
        with open(os.path.join(parent, _WH + name), "wb"):
            pass


def is_opaque(path: str, fmt: str) -> bool:
    """Whether the layer directory ``path`` hides what lower layers have under it."""
    if fmt == "overlay":
        try:
            return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
        except OSError:
            return False
    return fmt == "oci" and os.path.lexists(os.path.join(path, _OPQ))


def copy_xattrs(src: str, dst: str, *, skip_overlay: bool = False) -> None:
    """Copy the extended attributes of ``src`` to ``dst``, never following symlinks; those that
    cannot be read or set are skipped, as BuildKit logs and goes on (e.g. ``security.*``
    without privileges). ``skip_overlay`` leaves out ``trusted.overlay.*``, the whiteout and
    opacity marks of a store layer that belong to it, not to the files."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:  # no xattr support on this filesystem: nothing to carry
        return
    for name in names:
        if skip_overlay and name.startswith("trusted.overlay."):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(
                dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False
            )


def _set_meta(
    path: str, st: os.stat_result, *, times: bool = True, owner: tuple[int, int] | None = None
) -> None:
    if os.geteuid() == 0:
        os.lchown(path, *(owner or (st.st_uid, st.st_gid)))
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if times:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def copy_entry(
    src: str,
    dst: str,
    st: os.stat_result,
    links: dict[tuple[int, int], str] | None,
    *,
    hardlink: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Create ``dst`` as a copy of the non-directory ``src`` (``hardlink``: share the inode).

    ``links`` maps inodes already copied to their new path, so hardlinks stay hardlinks;
    ``owner``, when given, owns the copy instead of ``src``'s owner.
    """
    ino = (st.st_dev, st.st_ino)
    if links is not None and st.st_nlink > 1 and ino in links:
        os.link(links[ino], dst)
        return
    mode = st.st_mode
    if hardlink and not stat.S_ISLNK(mode):
        os.link(src, dst)
    elif stat.S_ISREG(mode):
        copy_data(src, dst, st.st_size)
        copy_xattrs(src, dst, skip_overlay=True)
        _set_meta(dst, st, owner=owner)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
        _set_meta(dst, st, owner=owner)
    else:
        os.mknod(dst, mode, st.st_rdev)
        _set_meta(dst, st, owner=owner)
    if links is not None and st.st_nlink > 1:
        links[ino] = dst


def apply_layer(
    layer: Path,
    dest: Path,
    fmt: str,
    *,
    hardlink: bool = False,
    sockets_as_files: bool = False,
    owner: tuple[int, int] | None = None,
) -> None:
    """Apply ``layer`` on top of the tree ``dest``: its whiteouts delete, its entries replace.

    :param hardlink: link files instead of copying them (for immutable results only).
    :param sockets_as_files: a socket becomes an empty file with its permissions, as
        BuildKit's file transfer (a local export) gives it.
    :param owner: the uid and gid that own every entry written (else each keeps its own).
    """
    applier = _Applier(fmt, hardlink)
    applier.sockets_as_files = sockets_as_files
    applier.owner = owner
    with os.scandir(dest) as it:
        empty = next(it, None) is None
    run(applier.apply_dir(str(layer), str(dest), empty=empty))
    for path, st in reversed(applier.dir_times):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


class _Applier:
    def __init__(self, fmt: str, hardlink: bool) -> None:
        self.fmt = fmt
        self.hardlink = hardlink
        self.links: dict[tuple[int, int], str] = {}
        self.dir_times: list[tuple[str, os.stat_result]] = []
        self.sockets_as_files = False
        self.owner: tuple[int, int] | None = None

    def apply_dir(self, src: str, dst: str, *, empty: bool = False) -> Steps[None]:
        """Apply one directory; its subdirectories through ``run``, so any depth. Into an
        ``empty`` one (a new layer's tree), nothing is there to replace."""
        fmt = self.fmt
        with os.scandir(src) as it:
            entries = sorted(it, key=lambda e: e.name)
        into = dst if dst.endswith("/") else f"{dst}/"  # joined by hand: thousands of names
        # A regular file linked, with no stat to record: its type from the listing (a file is
        # never a whiteout where whiteouts are devices), and the link keeps hard links as such.
        bare = self.hardlink and fmt != "oci"
        for entry in entries:
            target = f"{into}{entry.name}"
            if bare and entry.is_file(follow_symlinks=False):
                if not empty and os.path.lexists(target):
                    _remove(target)
                os.link(entry.path, target)
                continue
            st = entry.stat(follow_symlinks=False)
            if fmt == "oci" and entry.name == _OPQ:
                continue
            if is_whiteout(entry, st, fmt):
                name = entry.name[len(_WH) :] if fmt == "oci" else entry.name
                _remove(os.path.join(dst, name))
                continue
            if stat.S_ISDIR(st.st_mode):
                exists = not empty and os.path.isdir(target) and not os.path.islink(target)
                if empty:
                    os.mkdir(target)
                elif not exists:
                    _remove(target)
                    os.mkdir(target)
                elif is_opaque(entry.path, fmt):
                    for child in os.listdir(target):
                        _remove(os.path.join(target, child))
                copy_xattrs(entry.path, target, skip_overlay=True)
                _set_meta(target, st, times=False, owner=self.owner)
                yield self.apply_dir(entry.path, target, empty=not exists)
                self.dir_times.append((target, st))
            else:
                if not empty and os.path.lexists(target):
                    _remove(target)
                if self.sockets_as_files and stat.S_ISSOCK(st.st_mode):
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    _set_meta(target, st, owner=self.owner)
                    continue
                copy_entry(
                    entry.path, target, st, self.links, hardlink=self.hardlink, owner=self.owner
                )


def disk_blocks(
    path: Path,
    seen: set[tuple[int, int]] | None = None,
    visit: Callable[[str, os.stat_result], None] | None = None,
) -> int:
    """Bytes a tree really occupies: allocated blocks, each inode once (``seen`` carries the
    inodes already counted elsewhere, so hardlinked copies are not counted twice)."""
    seen = set() if seen is None else seen
    total = 0
    stack = [str(path)]
    while stack:
        top = stack.pop()
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            continue
        ino = (st.st_dev, st.st_ino)
        if ino in seen:
            continue
        seen.add(ino)
        total += st.st_blocks * 512
        if visit is not None:
            visit(top, st)
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(top) as it:
                    stack.extend(e.path for e in it)
            except OSError:
                continue
    return total


def has_whiteouts(path: Path, fmt: str) -> bool:
    """Whether the new layer ``path`` holds whiteouts or opaque directories below its root
    (then it cannot be shown as a tree on its own), from the directory entries' types alone:
    a stat only for a character device, an xattr read per directory."""
    if fmt == "plain":
        return False
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if fmt == "oci" and entry.name.startswith(_WH):  # the opaque mark too
                    return True
                if entry.is_dir(follow_symlinks=False):
                    if fmt == "overlay" and is_opaque(entry.path, fmt):
                        return True
                    stack.append(entry.path)
                elif fmt == "overlay" and not entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if is_whiteout(entry, st, fmt):
                        return True
    return False


def _same(a: os.stat_result, b: os.stat_result, pa: str, pb: str) -> bool:
    """Whether an entry is unchanged, as containerd's double-walking differ decides: type,
    permissions, owner and device; for non-directories also size and modification time, and
    the contents only when both times lack nanoseconds (a truncated copy)."""
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) != (b.st_mode, b.st_uid, b.st_gid, b.st_rdev):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True
    if a.st_size != b.st_size or a.st_mtime_ns // 10**9 != b.st_mtime_ns // 10**9:
        return False
    if a.st_mtime_ns % 10**9 or b.st_mtime_ns % 10**9:
        return a.st_mtime_ns == b.st_mtime_ns
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if not stat.S_ISREG(a.st_mode):
        return True
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def diff_trees(lower: Path | None, upper: Path, out: Path, fmt: str) -> None:
    """Write into the empty ``out`` the layer that turns ``lower`` into ``upper``.

    Changed and new entries are copied (with their parent directories), entries only in
    ``lower`` become whiteouts. Entries compare as BuildKit's differ compares them.
    """
    run(_diff_dir(str(lower) if lower is not None else None, str(upper), str(out), fmt, {}))


def _diff_dir(
    lower: str | None, upper: str, out: str, fmt: str, links: dict[tuple[int, int], str]
) -> Steps[bool]:
    """Fill ``out`` for one directory; return whether anything below it changed (its
    subdirectories through ``run``, so any depth)."""
    changed = False
    lower_names = set(os.listdir(lower)) if lower is not None else set()
    with os.scandir(upper) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        lpath = os.path.join(lower, entry.name) if lower is not None else None
        lst = os.lstat(lpath) if lpath is not None and entry.name in lower_names else None
        target = os.path.join(out, entry.name)
        if stat.S_ISDIR(st.st_mode):
            same_dir = lst is not None and stat.S_ISDIR(lst.st_mode)
            os.mkdir(target)
            below = yield _diff_dir(lpath if same_dir else None, entry.path, target, fmt, links)
            if below or lst is None or not _same(st, lst, entry.path, lpath or ""):
                copy_xattrs(entry.path, target, skip_overlay=True)
                _set_meta(target, st)
                if lst is not None and not same_dir and fmt == "overlay":
                    os.setxattr(target, OPAQUE_XATTR, b"y")
                changed = True
            else:
                os.rmdir(target)
        elif lst is None or not _same(st, lst, entry.path, lpath or ""):
            copy_entry(entry.path, target, st, links)
            changed = True
    for name in sorted(lower_names - {e.name for e in entries}):
        make_whiteout(out, name, fmt)
        changed = True
    return changed
