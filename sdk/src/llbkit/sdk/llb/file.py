"""File ops: chains of mkdir, mkfile, rm and copy actions, marshaled into one ``pb.FileOp``."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llbkit.core.llb import pb
from llbkit.sdk.llb._vertex import Marshaler, Options, Output, Vertex, add_caps

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform
    from llbkit.sdk.llb.state import State

__all__ = ["FileAction", "copy", "mkdir", "mkfile", "rm"]


def _owner(spec: str | None, base: int) -> pb.ChownOpt | None:
    """``user[:group]``, each a name (resolved in the target's /etc/passwd) or a number."""
    if not spec:
        return None
    owner = pb.ChownOpt()
    for part, target in zip(spec.split(":", 1), (owner.user, owner.group), strict=False):
        if part.isdigit():
            target.byID = int(part)
        else:
            target.byName.name = part
            target.byName.input = base
    return owner


def _time(ns: int | None) -> int:
    return -1 if ns is None else ns


def _normalize(parent: str, path: str, keep_slash: bool) -> str:
    cleaned = posixpath.normpath(path) if path else "."
    if not posixpath.isabs(cleaned):
        cleaned = posixpath.normpath(posixpath.join("/", parent, cleaned))
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if keep_slash:
        if path.endswith("/") and not cleaned.endswith("/"):
            cleaned += "/"
        elif path.endswith("/."):
            cleaned = (cleaned if cleaned == "/" else cleaned + "/") + "."
    return cleaned


@dataclass(frozen=True)
class FileAction:
    """One action and the actions before it in the chain; build with the module functions."""

    kind: str
    args: tuple[object, ...]
    prev: FileAction | None = None
    state: State | None = None

    def mkdir(self, path: str, mode: int = 0o755, **options: object) -> FileAction:
        """Chain a :func:`mkdir` after this action."""
        return replace(mkdir(path, mode, **options), prev=self)  # type: ignore[arg-type]

    def mkfile(self, path: str, mode: int, data: bytes, **options: object) -> FileAction:
        """Chain a :func:`mkfile` after this action."""
        return replace(mkfile(path, mode, data, **options), prev=self)  # type: ignore[arg-type]

    def rm(self, path: str, **options: object) -> FileAction:
        """Chain an :func:`rm` after this action."""
        return replace(rm(path, **options), prev=self)  # type: ignore[arg-type]

    def copy(self, source: State, src: str, dest: str, **options: object) -> FileAction:
        """Chain a :func:`copy` after this action."""
        return replace(copy(source, src, dest, **options), prev=self)

    def bind(self, state: State) -> FileAction:
        """This chain applied to ``state``."""
        prev = self.prev.bind(state) if self.prev is not None else None
        return replace(self, prev=prev, state=state)

    def chain(self) -> list[FileAction]:
        """The actions from first to last."""
        actions: list[FileAction] = []
        node: FileAction | None = self
        while node is not None:
            actions.append(node)
            node = node.prev
        return actions[::-1]


def mkdir(
    path: str,
    mode: int = 0o755,
    *,
    make_parents: bool = False,
    owner: str | None = None,
    timestamp: int | None = None,
) -> FileAction:
    """Create a directory (``make_parents`` as ``mkdir -p``); ``timestamp`` in Unix ns."""
    return FileAction("mkdir", (path, mode, make_parents, owner, timestamp))


def mkfile(
    path: str, mode: int, data: bytes, *, owner: str | None = None, timestamp: int | None = None
) -> FileAction:
    """Create a file with ``data``."""
    return FileAction("mkfile", (path, mode, data, owner, timestamp))


def rm(path: str, *, allow_not_found: bool = False, allow_wildcard: bool = False) -> FileAction:
    """Remove a path (a wildcard with ``allow_wildcard``)."""
    return FileAction("rm", (path, allow_not_found, allow_wildcard))


@dataclass(frozen=True)
class _Copy:
    source: State
    src: str
    dest: str
    owner: str | None = None
    mode: int | None = None
    mode_str: str = ""
    follow_symlinks: bool = False
    copy_dir_contents: bool = False
    attempt_unpack: bool = False
    create_dest_path: bool = False
    allow_wildcard: bool = False
    allow_empty_wildcard: bool = False
    timestamp: int | None = None
    include_patterns: Sequence[str] = ()
    exclude_patterns: Sequence[str] = ()


def copy(source: State, src: str, dest: str, **options: object) -> FileAction:
    """Copy ``src`` of ``source`` to ``dest``. Options: ``owner``, ``mode``, ``follow_symlinks``,
    ``copy_dir_contents``, ``attempt_unpack``, ``create_dest_path``, ``allow_wildcard``,
    ``allow_empty_wildcard``, ``timestamp``, ``include_patterns``, ``exclude_patterns``."""
    return FileAction("copy", (_Copy(source, src, dest, **options),))  # type: ignore[arg-type]


@dataclass(eq=False)
class FileOp(Vertex):
    """A ``pb.FileOp`` for a bound chain of actions."""

    action: FileAction
    options: Options
    platform: Platform | None

    def inputs(self) -> Sequence[Output]:
        found: list[Output] = []
        for action in self.action.chain():
            if action.state is not None and action.state.output is not None:
                found.append(action.state.output)
            if action.kind == "copy":
                spec = action.args[0]
                assert isinstance(spec, _Copy)
                if spec.source.output is not None:
                    found.append(spec.source.output)
        return found

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        op, meta = m.op_base(self.options, self.platform)
        add_caps(meta, "file.base")
        inputs: list[pb.Input] = []

        def index_of(output: Output | None) -> int:
            if output is None:
                return -1
            wanted = m.input(output)
            for i, have in enumerate(inputs):
                if have == wanted:
                    return i
            inputs.append(wanted)
            return len(inputs) - 1

        chain = self.action.chain()
        plans = []
        for position, action in enumerate(chain):
            base = index_of(action.state.output if action.state is not None else None)
            secondary = -1
            if action.kind == "copy":
                spec = action.args[0]
                assert isinstance(spec, _Copy)
                secondary = index_of(spec.source.output)
            plans.append((action, base, None if position == 0 else position - 1, secondary))
        op.inputs.extend(inputs)
        for position, (action, base, previous, secondary) in enumerate(plans):
            parent = action.state.cwd if action.state is not None else "/"
            entry = op.file.actions.add(
                input=base if previous is None else len(inputs) + previous,
                secondaryInput=secondary,
                output=0 if position == len(plans) - 1 else -1,
            )
            _fill(entry, action, parent, base)
        return op, meta


def _fill(entry: pb.FileAction, action: FileAction, parent: str, base: int) -> None:
    if action.kind == "mkdir":
        path, mode, parents, owner, stamp = action.args
        entry.mkdir.path = _normalize(parent, str(path), False)
        entry.mkdir.mode = int(mode) & 0o777  # type: ignore[call-overload]
        entry.mkdir.makeParents = bool(parents)
        _set_owner(entry.mkdir, owner, base)
        entry.mkdir.timestamp = _time(stamp)  # type: ignore[arg-type]
    elif action.kind == "mkfile":
        path, mode, data, owner, stamp = action.args
        entry.mkfile.path = _normalize(parent, str(path), False)
        entry.mkfile.mode = int(mode) & 0o777  # type: ignore[call-overload]
        entry.mkfile.data = bytes(data)  # type: ignore[call-overload]
        _set_owner(entry.mkfile, owner, base)
        entry.mkfile.timestamp = _time(stamp)  # type: ignore[arg-type]
    elif action.kind == "rm":
        path, missing_ok, wildcard = action.args
        entry.rm.path = _normalize(parent, str(path), False)
        entry.rm.allowNotFound = bool(missing_ok)
        entry.rm.allowWildcard = bool(wildcard)
    else:
        spec = action.args[0]
        assert isinstance(spec, _Copy)
        src = posixpath.normpath(spec.src) if spec.src else "."
        if not posixpath.isabs(src):
            src = posixpath.normpath(posixpath.join("/", spec.source.cwd, src))
        c = entry.copy
        c.src = src
        c.dest = _normalize(parent, spec.dest, True)
        _set_owner(c, spec.owner, base)
        c.include_patterns.extend(spec.include_patterns)
        c.exclude_patterns.extend(spec.exclude_patterns)
        c.allowWildcard = spec.allow_wildcard
        c.allowEmptyWildcard = spec.allow_empty_wildcard
        c.followSymlink = spec.follow_symlinks
        c.dirCopyContents = spec.copy_dir_contents
        c.attemptUnpackDockerCompatibility = spec.attempt_unpack
        c.createDestPath = spec.create_dest_path
        c.timestamp = _time(spec.timestamp)
        c.mode = -1 if spec.mode is None else spec.mode
        if spec.mode_str:
            c.modeStr = spec.mode_str


def _set_owner(
    target: pb.FileActionMkDir | pb.FileActionMkFile | pb.FileActionCopy, spec: object, base: int
) -> None:
    owner = _owner(spec if isinstance(spec, str) else None, base)
    if owner is not None:
        target.owner.CopyFrom(owner)
