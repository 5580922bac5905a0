"""BuildKit's own cache keys of a vertex, so that a cache BuildKit exported hits in llbkit.

BuildKit names a step's record by its op's *cache map* digest: Go's JSON of the op, normalized
(an exec's mount selectors, extra hosts' addresses and proxy variables left out, its platform
added; a file op's copy sources cut to their last name, each action's JSON nested as bytes),
hashed with the output index. A record is found by walking links from the records of the
step's inputs (input index, selector, the record's digest), not by one hash: the same op on
other inputs is another record with the same digest. An image's records are the digests of
its manifest key and of its layers' chain id.

The JSON is Go's ``encoding/json`` of BuildKit v0.11's structs: fields in declaration order,
``omitempty`` as tagged, enums as numbers, bytes in base64, ``<``, ``>`` and ``&`` escaped.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llbkit.core.gojson import go_json
from llbkit.core.llb import pb

__all__ = [
    "CacheMap",
    "Names",
    "chain_id",
    "exec_cache_map",
    "diff_cache_map",
    "file_cache_map",
    "go_json",
    "merge_cache_map",
    "output_key",
    "source_digest",
]

DIFF = "buildkit.diff.v0"
EXEC = "buildkit.exec.v0"
FILE = "buildkit.file.v0"
MERGE = "buildkit.merge.v0"
SOURCE = "buildkit.source.v0"


#: what BuildKit's content key of an input reads: each path, whether a symlink there is
#: followed, whether the path is a wildcard pattern (None: no content key, or one llbkit
#: cannot make: include or exclude patterns)
Content = tuple[tuple[str, bool, bool], ...] | None


@dataclass(frozen=True)
class CacheMap:
    """An op's cache map: its digest, per input the selector its links carry, and per input
    the paths its content key reads (:data:`Content`)."""

    digest: str
    selectors: tuple[str, ...]
    content: tuple[Content, ...] = ()


@dataclass(frozen=True)
class Names:
    """BuildKit's names of one vertex of a build: per output, the digests of its records (an
    image has two); per input, the selector of the links from that input's records and what
    its content key reads. ``random``: a client's directory, whose key BuildKit makes up."""

    records: tuple[tuple[str, ...], ...] = ()
    selectors: tuple[str, ...] = ()
    content: tuple[Content, ...] = ()
    random: bool = False


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def output_key(digest: str, output: int) -> str:
    """The digest of a record: the cache map digest with the output index."""
    return _sha(f"{digest}@{output}".encode())


def source_digest(key: str) -> str:
    """A source's cache map digest, from its key (an image's manifest key or chain id)."""
    return _sha(f"{SOURCE}:{key}".encode())


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain id of layers (OCI's identity.ChainID): a layer's id hashed on its parent's."""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = _sha(f"{chain} {diff_id}".encode())
    return chain


def _fields(*pairs: tuple[str, Any, bool]) -> dict[str, Any]:
    """A struct's fields in order: ``(name, value, omitempty)``; an empty value of an
    ``omitempty`` field (0, "", false, an empty list, nil) is left out, as Go leaves it."""
    return {
        name: value
        for name, value, omit in pairs
        if not (omit and (value is None or value is False or value in (0, "", b"", [])))
    }


# -- exec -----------------------------------------------------------------------------------


def _meta(meta: pb.Meta) -> dict[str, Any]:
    hosts = [_fields(("Host", h.Host, True)) for h in meta.extraHosts]  # IP left out
    ulimits = [
        _fields(("Name", u.Name, True), ("Soft", u.Soft, True), ("Hard", u.Hard, True))
        for u in meta.ulimit
    ]
    return _fields(
        ("args", list(meta.args), True),
        ("env", list(meta.env), True),
        ("cwd", meta.cwd, True),
        ("user", meta.user, True),
        # proxy_env: left out of the key
        ("extraHosts", hosts, True),
        ("hostname", meta.hostname, True),
        ("ulimit", ulimits, True),
        ("cgroupParent", meta.cgroupParent, True),
        ("removeMountStubsRecursive", meta.removeMountStubsRecursive, True),
    )


def _id_opt(opt: Any) -> dict[str, Any]:
    """A secret's or an SSH agent's mount options."""
    return _fields(
        ("ID", opt.ID, True),
        ("uid", opt.uid, True),
        ("gid", opt.gid, True),
        ("mode", opt.mode, True),
        ("optional", opt.optional, True),
    )


def _mount(mount: pb.Mount) -> dict[str, Any]:
    return _fields(
        ("input", mount.input, False),
        # selector: left out of the key (it is the link's)
        ("dest", mount.dest, True),
        ("output", mount.output, False),
        ("readonly", mount.readonly, True),
        ("mountType", mount.mountType, True),
        (
            "TmpfsOpt",
            _fields(("size", mount.TmpfsOpt.size, True)) if mount.HasField("TmpfsOpt") else None,
            True,
        ),
        (
            "cacheOpt",
            _fields(("ID", mount.cacheOpt.ID, True), ("sharing", mount.cacheOpt.sharing, True))
            if mount.HasField("cacheOpt")
            else None,
            True,
        ),
        ("secretOpt", _id_opt(mount.secretOpt) if mount.HasField("secretOpt") else None, True),
        ("SSHOpt", _id_opt(mount.SSHOpt) if mount.HasField("SSHOpt") else None, True),
        ("resultID", mount.resultID, True),
        ("contentCache", mount.contentCache, True),
    )


def _lone_root(mount: pb.Mount) -> bool:
    """The one root mount of a plain ``RUN``, which BuildKit keeps out of the key (for the
    keys of its older releases)."""
    return (
        mount.dest == "/"
        and not mount.readonly
        and mount.mountType == pb.MountType.BIND
        and not mount.HasField("cacheOpt")
        and not mount.HasField("SSHOpt")
        and not mount.HasField("secretOpt")
        and not mount.resultID
    )


def _platform(op: pb.Op) -> tuple[str, str, str]:
    if op.HasField("platform"):
        p = op.platform
        return p.OS, p.Architecture, p.Variant
    return "linux", "amd64", ""


def exec_cache_map(op: pb.Op) -> CacheMap:
    """An exec op's cache map, as BuildKit's exec op makes it."""
    ex = op.exec
    mounts = list(ex.mounts)
    as_json = [] if len(mounts) == 1 and _lone_root(mounts[0]) else [_mount(m) for m in mounts]
    secretenv = [
        _fields(("ID", s.ID, True), ("name", s.name, True), ("optional", s.optional, True))
        for s in ex.secretenv
    ]
    exec_json = _fields(
        ("meta", _meta(ex.meta) if ex.HasField("meta") else None, True),
        ("mounts", as_json, True),
        ("network", ex.network, True),
        ("security", ex.security, True),
        ("secretenv", secretenv, True),
    )
    os_, arch, variant = _platform(op)
    doc = _fields(
        ("Type", EXEC, False),
        ("Exec", exec_json, False),
        ("OS", os_, False),
        ("Arch", arch, False),
        ("Variant", variant, True),
    )
    paths: list[list[str]] = [[] for _ in op.inputs]
    written = [False] * len(op.inputs)
    for mount in mounts:
        if mount.input < 0 or mount.input >= len(paths):
            continue
        if mount.selector:
            paths[mount.input].append(_absolute(mount.selector))
        if (not mount.readonly or mount.dest == "/") and mount.output != -1:
            written[mount.input] = True  # an input the step writes on: no content key
    content: list[Content] = [
        None if w else (tuple((p, True, False) for p in _dedupe(ps)) or (("/", False, False),))
        for ps, w in zip(paths, written, strict=True)
    ]
    return CacheMap(_sha(go_json(doc)), tuple(_selector(p) for p in paths), tuple(content))


def _dedupe(paths: Sequence[str]) -> list[str]:
    """The paths none of the others is a parent folder of, sorted (BuildKit's dedupePaths)."""
    unique = set(paths)
    kept = [p for p in unique if not any(p != q and p.startswith(q + "/") for q in unique)]
    return sorted(kept)


def _absolute(path: str) -> str:
    """Go's ``path.Join("/", path)``: cleaned, one leading slash."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _selector(paths: Sequence[str]) -> str:
    return _sha("\0".join(paths).encode()) if paths else ""


# -- file -----------------------------------------------------------------------------------


def _user(opt: pb.UserOpt) -> dict[str, Any]:
    which = opt.WhichOneof("user")
    if which == "byName":
        inner: Any = {
            "byName": _fields(("name", opt.byName.name, True), ("input", opt.byName.input, False))
        }
    elif which == "byID":
        inner = _fields(("byID", opt.byID, True))
    else:
        inner = None
    return {"User": inner}


def _owner(chown: pb.ChownOpt) -> dict[str, Any]:
    return _fields(
        ("user", _user(chown.user) if chown.HasField("user") else None, True),
        ("group", _user(chown.group) if chown.HasField("group") else None, True),
    )


def _owner_paths(
    chown: pb.ChownOpt,
    paths: dict[int, list[str]],
    reads: dict[int, list[tuple[str, bool, bool, bool]]],
) -> None:
    """A name looked up in an input reads its /etc/passwd or /etc/group."""
    for which, path in (("user", "/etc/passwd"), ("group", "/etc/group")):
        if chown.HasField(which):
            opt = getattr(chown, which)
            if opt.WhichOneof("user") == "byName":
                paths.setdefault(opt.byName.input, []).append(path)
                reads.setdefault(opt.byName.input, []).append((path, True, False, False))


def _owner_of(
    action: Any,
    paths: dict[int, list[str]],
    reads: dict[int, list[tuple[str, bool, bool, bool]]],
) -> dict[str, Any] | None:
    """An action's owner as JSON (None without one), noting the files a name is looked up in."""
    if not action.HasField("owner"):
        return None
    _owner_paths(action.owner, paths, reads)
    return _owner(action.owner)


def file_cache_map(op: pb.Op) -> CacheMap:
    """A file op's cache map, as BuildKit's file op makes it."""
    count = len(op.inputs)
    paths: dict[int, list[str]] = {}
    #: per input, what its content key reads: (path, follow, wildcard, filters)
    reads: dict[int, list[tuple[str, bool, bool, bool]]] = {}
    invalid: set[int] = set()
    actions: list[bytes | None] = []
    indexes: list[list[int]] = []
    for action in op.file.actions:
        kind = action.WhichOneof("action")
        if action.input != -1:
            invalid.add(action.input)
        if kind == "mkdir":
            a = action.mkdir
            doc = _fields(
                ("path", a.path, True),
                ("mode", a.mode, True),
                ("makeParents", a.makeParents, True),
                ("owner", _owner_of(a, paths, reads), True),
                ("timestamp", int(a.timestamp), True),
            )
        elif kind == "mkfile":
            f = action.mkfile
            doc = _fields(
                ("path", f.path, True),
                ("mode", f.mode, True),
                ("data", bytes(f.data), True),
                ("owner", _owner_of(f, paths, reads), True),
                ("timestamp", int(f.timestamp), True),
            )
        elif kind == "rm":
            r = action.rm
            doc = _fields(
                ("path", r.path, True),
                ("allowNotFound", r.allowNotFound, True),
                ("allowWildcard", r.allowWildcard, True),
            )
        elif kind == "copy":
            c = action.copy
            owner = _owner_of(c, paths, reads)
            src = c.src
            if action.secondaryInput != -1 and action.secondaryInput < count:
                paths.setdefault(action.secondaryInput, []).append(c.src)
                wild = c.allowWildcard and _has_wildcards(c.src)
                filtered = bool(c.include_patterns or c.exclude_patterns)
                reads.setdefault(action.secondaryInput, []).append(
                    (c.src, c.followSymlink, wild, filtered)
                )
                src = posixpath.basename(src.rstrip("/")) or ("/" if src.startswith("/") else ".")
            doc = _fields(
                ("src", src, True),
                ("dest", c.dest, True),
                ("owner", owner, True),
                ("mode", c.mode, True),
                ("followSymlink", c.followSymlink, True),
                ("dirCopyContents", c.dirCopyContents, True),
                ("attemptUnpackDockerCompatibility", c.attemptUnpackDockerCompatibility, True),
                ("createDestPath", c.createDestPath, True),
                ("allowWildcard", c.allowWildcard, True),
                ("allowEmptyWildcard", c.allowEmptyWildcard, True),
                ("timestamp", int(c.timestamp), True),
                ("include_patterns", list(c.include_patterns), True),
                ("exclude_patterns", list(c.exclude_patterns), True),
            )
        else:
            doc = None  # an action BuildKit v0.11 does not know: its JSON is null
        actions.append(None if doc is None else go_json(doc))
        indexes.append([action.input, action.secondaryInput, action.output])
    whole = _fields(
        ("Type", FILE, False),
        ("Actions", actions, False),
        ("indexes", [] if _default_indexes(indexes) else indexes, True),
    )
    selectors = []
    content: list[Content] = []
    for index in range(count):
        found = paths.get(index)
        if not found or index in invalid:
            selectors.append("")
            content.append(None)
            continue
        joined = b"\0".join(sorted((p.encode() for p in found), reverse=True))
        selectors.append(_sha(joined))
        content.append(_file_reads(reads.get(index, [])))
    return CacheMap(_sha(go_json(whole)), tuple(selectors), tuple(content))


def _file_reads(reads: Sequence[tuple[str, bool, bool, bool]]) -> Content:
    """BuildKit's dedupeSelectors: plain paths, then followed ones, each without those under
    another, then the patterns, all by path. None where include or exclude patterns filter
    what is read (llbkit does not make that content key)."""
    if any(filtered for *_, filtered in reads):
        return None
    plain = _dedupe([p for p, follow, wild, _ in reads if not follow and not wild])
    followed = _dedupe([p for p, follow, wild, _ in reads if follow and not wild])
    chosen = [(p, False, False) for p in plain] + [(p, True, False) for p in followed]
    chosen += [(p, follow, True) for p, follow, wild, _ in reads if wild]
    return tuple(sorted(chosen, key=lambda s: s[0]))


def _has_wildcards(name: str) -> bool:
    """Go's containsWildcards: ``*``, ``?`` or ``[`` not escaped by a backslash."""
    skip = False
    for ch in name:
        if skip:
            skip = False
        elif ch == "\\":
            skip = True
        elif ch in "*?[":
            return True
    return False


def _default_indexes(indexes: list[list[int]]) -> bool:
    """The usual wiring of a file op's actions, which BuildKit keeps out of the key."""
    if not indexes:
        return False
    last = len(indexes) - 1
    for n, (inp, secondary, output) in enumerate(indexes):
        if n == 0 and inp != 0:
            return False
        if n and inp != len(indexes) + n - 1:
            return False
        if secondary not in (-1, 1):
            return False
        if output != (0 if n == last else -1):
            return False
    return True


# -- merge and diff ------------------------------------------------------------------------


def merge_cache_map(op: pb.Op) -> CacheMap:
    """A merge op's cache map. BuildKit v0.11 takes the op's JSON itself as the digest (it
    does not hash it), so a record's digest is the JSON's hash with the output."""
    doc = {
        "Type": MERGE,
        "Merge": _fields(("inputs", [{"input": i.input} for i in op.merge.inputs], True)),
    }
    count = len(op.merge.inputs)
    return CacheMap(go_json(doc).decode(), ("",) * count, (None,) * count)


def diff_cache_map(op: pb.Op) -> CacheMap:
    """A diff op's cache map (its digest the op's JSON, as a merge's)."""
    diff = op.diff
    lower = {"input": diff.lower.input} if diff.HasField("lower") else None
    upper = {"input": diff.upper.input} if diff.HasField("upper") else None
    doc = {"Type": DIFF, "Diff": _fields(("lower", lower, True), ("upper", upper, True))}
    count = sum(1 for side in (lower, upper) if side is not None and side["input"] != -1)
    return CacheMap(go_json(doc).decode(), ("",) * count, (None,) * count)
