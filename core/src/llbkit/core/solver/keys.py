"""Cache keys: deterministic, portable, and kept with the record of what went into them.

A vertex's definition key hashes its op (normalized as BuildKit normalizes ops for caching:
no input digests, no mount selectors, no proxy variables or extra-host addresses) with its
inputs' keys and selectors. Where an op reads content from an input (a copy's source), a second
key replaces that input's key by the checksum of just the paths read, so an unrelated change
upstream still hits the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from llbkit.core.llb import pb
from llbkit.core.llb.definition import Vertex
from llbkit.core.llb.marshal import marshal

__all__ = [
    "content_inputs",
    "key_digest",
    "normalized_op_digest",
    "owner_inputs",
    "result_key",
    "vertex_name",
]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def normalized_op_digest(op: pb.Op) -> str:
    """The digest of the op without what must not change its cache key."""
    norm = pb.Op()
    norm.CopyFrom(op)
    del norm.inputs[:]
    if norm.WhichOneof("op") == "exec":
        for mount in norm.exec.mounts:
            mount.selector = ""
        for host in norm.exec.meta.extraHosts:
            host.IP = ""
        norm.exec.meta.ClearField("proxy_env")
    return _sha(marshal(norm))


def key_digest(record: Mapping[str, Any]) -> str:
    """The key for a record of its parts (stored beside it, to explain a later miss)."""
    return _sha(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def result_key(vertex_key: str, output: int) -> str:
    """The portable key of one output of a vertex."""
    return _sha(f"{vertex_key}@{output}".encode())


def content_inputs(op: pb.Op) -> dict[int, list[pb.FileActionCopy]]:
    """Inputs a file op only copies from, with the copies that read them."""
    reads: dict[int, list[pb.FileActionCopy]] = {}
    based: set[int] = set()
    count = len(op.inputs)
    if op.WhichOneof("op") != "file":
        return reads
    for action in op.file.actions:
        if 0 <= action.input < count:
            based.add(action.input)
        if action.WhichOneof("action") == "copy" and 0 <= action.secondaryInput < count:
            reads.setdefault(action.secondaryInput, []).append(action.copy)
        based.update(i for i in owner_inputs(action) if 0 <= i < count)
    return {i: copies for i, copies in reads.items() if i not in based}


def owner_inputs(action: pb.FileAction) -> list[int]:
    """Inputs whose ``/etc/passwd`` or ``/etc/group`` an action's owner names are looked up in."""
    kind = action.WhichOneof("action")
    if kind not in ("mkdir", "mkfile", "copy"):
        return []
    part = getattr(action, kind)
    if not part.HasField("owner"):
        return []
    return [
        user.byName.input
        for user in (part.owner.user, part.owner.group)
        if user.WhichOneof("user") == "byName"
    ]


def selectors(op: pb.Op) -> dict[int, str]:
    """Per input, the paths the op reads from it, as BuildKit joins them (sorted, NUL)."""
    return {
        i: "\0".join(sorted({c.src for c in copies}, reverse=True))
        for i, copies in content_inputs(op).items()
    }


def vertex_name(vertex: Vertex, names: Mapping[str, str]) -> str:
    """The name progress shows: ``llb.customname``, else what BuildKit derives from the op."""
    custom = vertex.metadata.description.get("llb.customname")
    if custom:
        return custom
    op = vertex.op
    kind = vertex.kind
    if kind == "source":
        name = op.source.identifier
        include = op.source.attrs.get("local.includepattern", "")
        if name.startswith("local://") and include:
            try:
                patterns = json.loads(include)
            except ValueError:
                patterns = []
            if isinstance(patterns, list) and len(patterns) == 1:
                name += f" ({patterns[0]})"
        return name
    if kind == "exec":
        return " ".join(op.exec.meta.args)
    if kind == "file":
        parts = []
        for action in op.file.actions:
            which = action.WhichOneof("action")
            if which == "copy":
                parts.append(f"copy {action.copy.src} {action.copy.dest}")
            elif which in ("mkdir", "mkfile", "rm"):
                parts.append(f"{which} {getattr(action, which).path}")
        return ", ".join(parts)
    if kind == "build":
        return "build"
    if kind == "merge":
        return "merge (" + ", ".join(names[i.digest] for i in op.inputs) + ")"
    if kind == "diff":

        def side(index: int) -> str:
            return "scratch" if index < 0 else f"({names[op.inputs[index].digest]})"

        return f"diff {side(op.diff.lower.input)} -> {side(op.diff.upper.input)}"
    return "unknown"
