"""Mirroring a directory into another one, transferring only what changed.

Used for ``local://`` sources: the engine keeps one mirror per client directory, so rebuilding
after a small edit re-reads (and re-hashes) only the changed files. Changed files are written
anew and renamed into place, never modified, so a layer that hardlinked the previous version
keeps it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from llbkit.core.fs.copydata import copy_data, mirror_file
from llbkit.core.fs.iterative import Steps, rmtree, run
from llbkit.core.fs.sendpatterns import SenderPatterns, selected

__all__ = ["sync_tree"]


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        a.st_mode == b.st_mode
        and a.st_uid == b.st_uid
        and a.st_gid == b.st_gid
        and (stat.S_ISDIR(a.st_mode) or (a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns))
    )


def _meta(path: str, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def sync_tree(
    src: Path,
    dest: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    skip_dirs: Sequence[Path] = (),
) -> set[str]:
    """Make ``dest`` mirror ``src`` (filtered by patterns); return the paths (relative to
    ``dest``) made, replaced, removed or given new metadata: what a checksum must look at again.

    ``follow_paths`` are what is sent (with the targets of symlinks on them, resolved inside
    ``src``), as fsutil resolves them into include patterns before walking; a malformed
    pattern raises :class:`SenderError` in fsutil's words. ``skip_dirs`` are never
    mirrored: an engine's own state root inside a context would otherwise copy itself into
    itself, deeper on every build.
    """
    # What fsutil's sender would send, chosen first by its own rules; the mirror then takes
    # exactly those entries (a directory is in the selection when anything below it is).
    chosen = selected(str(src), SenderPatterns(str(src), include, exclude, follow_paths))
    dest.mkdir(parents=True, exist_ok=True)
    skip = set()
    for private in skip_dirs:
        try:
            st = os.stat(private)
        except OSError:
            continue
        skip.add((st.st_dev, st.st_ino))
    seen = _Seen()
    run(_sync_dir(str(src), str(dest), "", _Filter(chosen, skip), seen))
    return seen.changes


@dataclasses.dataclass
class _Seen:
    """What a sync learns on its way: the first mirrored path of each hardlinked inode, and
    the paths it changed."""

    links: dict[tuple[int, int], str] = dataclasses.field(default_factory=dict)
    changes: set[str] = dataclasses.field(default_factory=set)


class _Filter:
    def __init__(self, chosen: set[str] | None, skip: set[tuple[int, int]]) -> None:
        self.chosen = chosen
        self.skip = skip

    def skipped(self, entry: os.DirEntry[str]) -> bool:
        if not self.skip or not entry.is_dir(follow_symlinks=False):
            return False
        return (entry.stat(follow_symlinks=False).st_dev, entry.inode()) in self.skip


def _sync_dir(
    src: str,
    dest: str,
    rel: str,
    patterns: _Filter,
    seen: _Seen,
) -> Steps[int]:
    """Mirror one directory; its children through ``run``, so any depth is walked."""
    chosen = patterns.chosen
    changed = 0
    keep: set[str] = set()
    with os.scandir(src) as it:
        entries = sorted((e for e in it if not patterns.skipped(e)), key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if chosen is not None and path not in chosen:
            continue
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        target = f"{dest}/{entry.name}"
        try:
            old = os.lstat(target)
        except FileNotFoundError:
            old = None
        if is_dir:
            if old is not None and not stat.S_ISDIR(old.st_mode):
                os.unlink(target)
                seen.changes.add(path)
                old = None
            if old is None:
                os.mkdir(target)
                changed += 1
            below = yield _sync_dir(entry.path, target, path, patterns, seen)
            changed += below
            keep.add(entry.name)
            if old is None or not _same(st, old) or below:
                _meta(target, st)
                seen.changes.add(path)
            continue
        keep.add(entry.name)
        if _sync_file(entry, st, old=old, target=target, dest=dest, links=seen.links):
            changed += 1
            seen.changes.add(path)
    return changed + _remove_others(dest, rel, keep, seen)


def _remove_others(dest: str, rel: str, keep: set[str], seen: _Seen) -> int:
    """Remove what ``dest`` holds beyond ``keep``; how many entries went."""
    gone = [name for name in os.listdir(dest) if name not in keep]
    for name in gone:
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path):
            rmtree(path)
        else:
            os.unlink(path)
        seen.changes.add(f"{rel}/{name}" if rel else name)
    return len(gone)


def _as_file(st: os.stat_result) -> os.stat_result:
    """A socket's stat as the empty regular file it is mirrored as."""
    fields = list(st)
    fields[stat.ST_MODE] = stat.S_IFREG | stat.S_IMODE(st.st_mode)
    fields[stat.ST_SIZE] = 0
    times = {n: getattr(st, n) for n in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
    return os.stat_result(fields, times)


def _temporary(name: str) -> str:
    """A sibling name to write ``name`` under before it replaces it: short whatever the
    name's length (a prefix would take a name of 243 bytes or more past NAME_MAX), and the
    same for the same name, so a retry after a crash takes the leftover's place."""
    return ".llbkit-sync-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:24]


def _sync_file(
    entry: os.DirEntry[str],
    st: os.stat_result,
    *,
    old: os.stat_result | None,
    target: str,
    dest: str,
    links: dict[tuple[int, int], str],
) -> int:
    """Mirror one non-directory; 1 if it changed."""
    socket = stat.S_ISSOCK(st.st_mode)
    if socket:
        st = _as_file(st)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not socket:
        first = links.setdefault((st.st_dev, st.st_ino), target)
        if first != target:
            # A hardlink of a file already mirrored: link to the mirrored copy.
            if old is not None and os.path.samestat(old, os.lstat(first)):
                return 0
            tmp = f"{dest}/{_temporary(entry.name)}"
            os.link(first, tmp)
            _replace(tmp, target, old)
            return 1
    if (
        old is not None
        and _same(st, old)
        and (not stat.S_ISLNK(st.st_mode) or os.readlink(entry.path) == os.readlink(target))
    ):
        return 0
    if stat.S_ISREG(st.st_mode) and old is None and not socket:
        # Nothing to replace: written in place (an interrupted copy keeps the wrong time, so
        # the next mirror copies it again).
        mirror_file(entry.path, target, st)
        return 1
    tmp = f"{dest}/{_temporary(entry.name)}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a mirror that was killed
    if socket:
        # BuildKit's context transfer turns a socket into an empty file with its permissions.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    elif stat.S_ISREG(st.st_mode):
        copy_data(entry.path, tmp, st.st_size)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(entry.path), tmp)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(tmp, 0o600)  # as BuildKit copies it: a FIFO, never opened
    else:
        return 0  # devices are not part of a build context
    _meta(tmp, st)
    _replace(tmp, target, old)
    return 1


def _replace(tmp: str, target: str, old: os.stat_result | None) -> None:
    if old is not None and stat.S_ISDIR(old.st_mode):
        rmtree(target)
    os.replace(tmp, target)
