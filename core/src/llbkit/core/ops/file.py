"""Running a ``pb.FileOp``: its chain of mkdir, mkfile, rm and copy actions, on directories.

The caller supplies the inputs as read-only directories and a way to get a fresh writable
directory seeded from one (how is the store's business: a copy, or an overlay upper layer).
Actions run in order; an action's result feeds the later actions that name it, and the results
with an output index are returned.

When the inputs are immutable layers, files copied unchanged from them are hard-linked
(:mod:`llbkit.core.ops.borrow`): before any later action writes such a file in place, it gets a
private copy. A copy onto a fresh overlay work tree may run before the overlay is mounted
(:mod:`llbkit.core.ops.upper`), since only the upper directory can take those links.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llbkit.core.errors import UserError
from llbkit.core.fs.contenthash import ContentHasher
from llbkit.core.fs.gomatch import has_wildcards
from llbkit.core.fs.iterative import makedirs, rmtree
from llbkit.core.fs.rootpath import resolve_in_root
from llbkit.core.llb import pb
from llbkit.core.ops.borrow import Borrowed
from llbkit.core.ops.copier import (
    Copier,
    CopyError,
    Owner,
    inside,
    mkdir_all,
    set_owner,
    set_times,
)
from llbkit.core.ops.upper import NeedsMount, Upper
from llbkit.core.ops.users import read_entries
from llbkit.core.patterns import PatternMatcher

__all__ = ["Deferred", "FileOpError", "NeedsMount", "Workdir", "clean_path", "run_file_op"]

#: make a new writable directory, seeded with a copy of the given one (or empty for None)
Workdir = Callable[[Path | None], Path]


class Deferred(Protocol):
    """A work tree over a base whose overlay is not mounted yet."""

    #: where the tree is once mounted
    path: Path
    #: the empty upper directory, written directly until the mount
    upper: Path
    #: a read-only view of the base
    lower: Path

    def mount(self) -> Path:
        """Mount the overlay (the upper as written so far); return :attr:`path`."""
        ...


@dataclass
class _Work:
    """One action's writable tree, and the inodes linked into it."""

    path: Path
    borrowed: Borrowed
    pending: Deferred | None = None

    def mounted(self) -> Path:
        if self.pending is not None:
            self.path = self.pending.mount()
            self.borrowed.root = self.path
            self.pending = None
        return self.path

    @property
    def final(self) -> Path:
        return self.pending.path if self.pending is not None else self.path


def _early_copy(action: pb.FileAction) -> bool:
    """A copy an unmounted upper can take: no archive to unpack."""
    copy = action.copy
    return action.WhichOneof("action") == "copy" and not copy.attemptUnpackDockerCompatibility


class FileOpError(UserError):
    """A file action that failed; the message names the action and the path."""


def clean_path(path: str) -> str:
    """BuildKit's ``cleanPath``: absolute and clean, keeping a trailing ``/`` or ``/.``."""
    cleaned = posixpath.normpath(posixpath.join("/", path))
    cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/."):
        return (cleaned if cleaned == "/" else cleaned + "/") + "."
    if path.endswith("/") and cleaned != "/":
        return cleaned + "/"
    return cleaned


def _time(ns: int) -> int | None:
    return None if ns == -1 else ns


def _lookup(root: Path | None, file: str, name: str) -> tuple[int, int] | None:
    """``(id, primary gid)`` of ``name`` in ``root``'s ``/etc/passwd`` or ``/etc/group``."""
    if root is None:
        return None
    for parts in read_entries(root, file):
        if parts[0] == name:
            try:
                # In /etc/passwd the fourth field is the primary gid; in /etc/group, members.
                primary = file.endswith("passwd") and parts[3]
                return int(parts[2]), int(parts[3]) if primary else 0
            except ValueError:
                return None
    return None


def _owner(chown: pb.ChownOpt | None, root_of: Callable[[int], Path | None]) -> Owner | None:
    """BuildKit's ``readUser``: a name missing from the files leaves id 0, as v0.11.6 does."""
    if chown is None:
        return None
    uid = gid = 0
    if chown.HasField("user"):
        if chown.user.WhichOneof("user") == "byName":
            found = _lookup(root_of(chown.user.byName.input), "/etc/passwd", chown.user.byName.name)
            if found is not None:
                uid, gid = found
        else:
            uid = gid = chown.user.byID
    if chown.HasField("group"):
        if chown.group.WhichOneof("user") == "byName":
            found = _lookup(
                root_of(chown.group.byName.input), "/etc/group", chown.group.byName.name
            )
            if found is not None:
                gid = found[0]
        else:
            gid = chown.group.byID
    return Owner(uid, gid)


def _owner_of(
    action: pb.FileActionMkDir | pb.FileActionMkFile | pb.FileActionCopy,
    root_of: Callable[[int], Path | None],
) -> Owner | None:
    return _owner(action.owner if action.HasField("owner") else None, root_of)


def _mkdir(root: Path, action: pb.FileActionMkDir, owner: Owner | None) -> None:
    path = str(resolve_in_root(root, action.path))
    mode = action.mode & 0o777
    if action.makeParents:
        mkdir_all(path, mode, owner, _time(action.timestamp), root=str(root))
        return
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        raise FileOpError(f"mkdir {action.path}: parent directory does not exist") from None
    os.chmod(path, mode)
    set_owner(path, owner)
    set_times(path, _time(action.timestamp))


def _mkfile(
    root: Path, action: pb.FileActionMkFile, owner: Owner | None, borrowed: Borrowed
) -> None:
    path = str(resolve_in_root(root, action.path))
    if os.path.isdir(path):
        raise FileOpError(f"mkfile {action.path}: is a directory")
    existed = os.path.lexists(path)
    if existed:
        borrowed.privatize(path)  # written in place below
    try:
        with open(path, "wb") as handle:
            handle.write(action.data)
    except FileNotFoundError:
        raise FileOpError(f"mkfile {action.path}: parent directory does not exist") from None
    if not existed:  # as os.WriteFile: an existing file keeps its permissions
        os.chmod(path, action.mode & 0o777)
    set_owner(path, owner)
    set_times(path, _time(action.timestamp))


def _rm(root: Path, action: pb.FileActionRm) -> None:
    paths = [action.path]
    if action.allowWildcard:
        paths = ["/" + m for m in ContentHasher(root).glob(clean_path(action.path))]
    for path in paths:
        parent, base = posixpath.split(posixpath.normpath(path))
        if not base or base == "/":
            raise FileOpError(f"rm {action.path}: refusing to remove the root")
        target = resolve_in_root(root, parent) / base
        if target.is_dir() and not target.is_symlink():
            rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
        elif not action.allowNotFound:
            raise FileOpError(f"rm {action.path}: no such file or directory")


def _is_archive(path: Path) -> bool:
    # The tar reader loads only for an ADD that may unpack: most builds have none.
    import tarfile

    from llbkit.core.snapshot.untar import LayerError, open_archive

    if not path.is_file() or path.is_symlink():
        return False
    try:
        with open_archive(path, threaded=False) as archive:
            return archive.next() is not None
    except (tarfile.TarError, OSError, EOFError, LayerError):
        return False


def _unpack(src: Path, dest_root: Path, dest: str, owner: Owner | None, ns: int | None) -> None:
    import tarfile

    from llbkit.core.snapshot.untar import LayerError

    target = resolve_in_root(dest_root, dest)
    mkdir_all(str(target), 0o755, owner, ns, root=str(dest_root))
    try:
        _extract(src, target)
    except (tarfile.TarError, KeyError, OSError, EOFError, LayerError) as err:
        # KeyError: a hard link naming no member, which BuildKit's untar reports as a failed link.
        reason: object = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, OSError) and err.filename:  # the path in the image, not the host's
            reason = f"{err.strerror}: {inside(str(dest_root), os.fsdecode(err.filename))}"
        raise FileOpError(f"unpack {src.name} to {dest}: {reason}") from None


def _extract(src: Path, target: Path) -> None:
    import tarfile

    from llbkit.core.snapshot.untar import check_member, open_archive

    # The members are checked and placed here; tarfile's own filters (3.11.4 on) are told so.
    trusted: dict[str, Any] = (
        {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    )

    # The engine's layer limits and header bound hold for an ADDed archive too.
    with open_archive(src) as archive:
        for count, member in enumerate(archive, 1):
            check_member(member, count)
            inside = resolve_in_root(target, member.name, follow_last=False)
            member.name = os.path.relpath(inside, target)
            makedirs(os.path.dirname(inside))  # tarfile's own os.makedirs recurses per level
            if member.islnk():
                linked = resolve_in_root(target, member.linkname, follow_last=False)
                member.linkname = os.path.relpath(linked, target)
            archive.extract(member, target, set_attrs=True, numeric_owner=True, **trusted)
            if member.issym():  # tarfile leaves a link's own time; Go's untar sets it
                when = int(member.mtime * 10**9)
                os.utime(inside, ns=(when, when), follow_symlinks=False)


def _copy(
    src_root: Path,
    dest_root: Path,
    action: pb.FileActionCopy,
    owner: Owner | None,
    *,
    borrow: Borrowed | None,
    upper: Upper | None,
    scratch: bool = False,
) -> None:
    """Copy ``action``'s sources; ``scratch``: from nothing, where BuildKit has no folder to
    walk and names a missing source itself."""
    src, dest = clean_path(action.src), clean_path(action.dest)
    if not action.createDestPath:
        if upper is not None:
            found = upper.lstat(os.path.dirname(upper.resolve(action.dest))) is not None
        else:
            found = resolve_in_root(dest_root, action.dest).parent.exists()
        if not found:
            missing = posixpath.dirname(dest.rstrip("/")) or "/"
            raise FileOpError(f"copy to {action.dest}: {missing} does not exist")
    copier = Copier(
        owner=owner,
        mode=None if action.mode == -1 else action.mode,
        mode_str=action.modeStr,
        time_ns=_time(action.timestamp),
        include=PatternMatcher(action.include_patterns) if action.include_patterns else None,
        exclude=PatternMatcher(action.exclude_patterns) if action.exclude_patterns else None,
        borrow=borrow,
    )
    sources = [src]
    if action.allowWildcard and has_wildcards(src):
        sources = ["/" + m for m in ContentHasher(src_root).glob(src)]
        if not sources:
            if action.allowEmptyWildcard:
                return
            raise FileOpError(f"copy {action.src}: no source files were specified (no match)")
    for source in sources:
        if action.attemptUnpackDockerCompatibility:
            host = resolve_in_root(src_root, source)
            if _is_archive(host):
                _unpack(host, dest_root, dest, owner, _time(action.timestamp))
                continue
        try:
            copier.copy(
                src_root,
                source,
                dest_root,
                dest,
                follow_links=action.followSymlink,
                dir_contents=action.dirCopyContents,
                upper=upper,
                name_folder=not scratch,
            )
        except CopyError as err:
            raise FileOpError(f"copy {action.src} to {action.dest}: {err}") from None


def run_file_op(
    op: pb.Op,
    inputs: Sequence[Path | None],
    workdir: Workdir,
    *,
    deferred: Callable[[Path], Deferred | None] | None = None,
    share: Callable[[int, Path], frozenset[int] | None] | None = None,
    borrowed: dict[Path, Borrowed] | None = None,
) -> list[Path]:
    """Run ``op.file``'s actions on ``inputs`` (``None`` for scratch); return its outputs.

    :param inputs: one read-only directory per ``op.inputs`` entry.
    :param workdir: gives each action a writable directory seeded from its base.
    :param deferred: gives a copy onto the input ``base`` its work tree unmounted, when the
        store can (``None``: it cannot).
    :param share: the inputs are immutable layers: files copied unchanged from input ``n``
        into the tree ``t`` (its final path) are linked, but for the inode numbers
        ``share(n, t)`` gives (``None``: not from that input).
    :param borrowed: receives, by output path, what each output tree linked.
    :raises NeedsMount: a copy an unmounted upper could not reproduce; the caller runs the op
        again without ``deferred``.
    """
    actions = list(op.file.actions)
    count = len(inputs)
    uses: dict[int, int] = {}
    for action in actions:
        for ref in (action.input, action.secondaryInput):
            uses[ref] = uses.get(ref, 0) + 1
    results: list[_Work] = []

    def root_of(index: int) -> Path | None:
        if index < 0:
            return None
        return inputs[index] if index < count else results[index - count].mounted()

    outputs: dict[int, _Work] = {}
    for action in actions:
        kind = action.WhichOneof("action")
        # An intermediate result read by no one else is changed in place instead of copied.
        reuse = (
            action.input >= count
            and uses[action.input] == 1
            and actions[action.input - count].output < 0
        )
        if reuse:
            work = results[action.input - count]
        else:
            base = root_of(action.input)
            pending = None
            if deferred is not None and base is not None and action.input < count:
                pending = deferred(base) if _early_copy(action) else None
            if pending is not None:
                work = _Work(pending.upper, Borrowed(pending.upper), pending)
            else:
                path = workdir(base)
                work = _Work(path, Borrowed(path))
        try:
            _run_action(action, work, len(inputs), root_of, workdir=workdir, share=share)
        except OSError as err:
            raise FileOpError(
                f"{kind} failed: {err.strerror or err}: {err.filename or ''}"
            ) from None
        results.append(work)
        if action.output >= 0:
            outputs[action.output] = work
    if borrowed is not None:
        borrowed.update({work.final: work.borrowed for work in outputs.values()})
    return [outputs[i].final for i in sorted(outputs)]


def _run_action(
    action: pb.FileAction,
    work: _Work,
    count: int,
    root_of: Callable[[int], Path | None],
    *,
    workdir: Workdir,
    share: Callable[[int, Path], frozenset[int] | None] | None,
) -> None:
    kind = action.WhichOneof("action")
    if kind == "mkdir":
        _mkdir(work.mounted(), action.mkdir, _owner_of(action.mkdir, root_of))
    elif kind == "mkfile":
        owner = _owner_of(action.mkfile, root_of)
        _mkfile(work.mounted(), action.mkfile, owner, work.borrowed)
    elif kind == "rm":
        _rm(work.mounted(), action.rm)
    elif kind == "copy":
        owner = _owner_of(action.copy, root_of)
        if not _early_copy(action):
            work.mounted()
        if action.copy.attemptUnpackDockerCompatibility:
            work.borrowed.privatize_all()  # an archive unpacks over files in place
        found = root_of(action.secondaryInput)
        source = found or workdir(None)
        blocked = None
        if share is not None and 0 <= action.secondaryInput < count:
            blocked = share(action.secondaryInput, work.final)
        if blocked is not None:
            work.borrowed.using(action.secondaryInput, blocked)
        upper = Upper(work.path, work.pending.lower) if work.pending is not None else None
        try:
            _copy(
                source,
                work.path,
                action.copy,
                owner,
                borrow=work.borrowed if blocked is not None else None,
                upper=upper,
                scratch=found is None,
            )
        except (UserError, OSError) as err:
            if upper is not None:  # the mounted tree fails in its own words
                raise NeedsMount(str(err)) from err
            raise
    else:
        raise FileOpError(f"file action {kind!r} is not supported by this llbkit")
