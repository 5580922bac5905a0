"""One class per LLB op kind (see :mod:`.base`); :func:`op_for` picks it for a vertex."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llbkit.core.llb.definition import Vertex
from llbkit.core.solver.ops.base import Op, OpContext
from llbkit.core.solver.ops.source import SourceOp

if TYPE_CHECKING:
    from llbkit.core.solver.ops.exec import ExecOp
    from llbkit.core.solver.ops.file import FileOp
    from llbkit.core.solver.ops.merge import DiffOp, MergeOp

__all__ = [
    "DiffOp",
    "ExecOp",
    "FileOp",
    "MergeOp",
    "Op",
    "OpContext",
    "SourceOp",
    "op_for",
    "ops_most_used",
]


class _Unsupported(Op):
    """Build and passthrough ops: loaded and named, refused when they would run."""

    kind = "unknown"


class _BuildOp(_Unsupported):
    kind = "build"


#: kind -> (module, class); a module loads when a definition first has its kind, so a build of
#: file ops never imports what runs containers
_KINDS = {
    "exec": ("exec", "ExecOp"),
    "file": ("file", "FileOp"),
    "merge": ("merge", "MergeOp"),
    "diff": ("merge", "DiffOp"),
}


def ops_most_used() -> tuple[str, ...]:
    """The modules of the kinds almost every build has (a Dockerfile's ``RUN`` and ``COPY``),
    and what runs them."""
    ops = tuple(f"{__name__}.{_KINDS[kind][0]}" for kind in ("exec", "file"))
    return (*ops, "llbkit.core.ops.users", "llbkit.core.ops.file", "llbkit.core.cache.shares")


def op_for(vertex: Vertex) -> Op:
    """The op object for ``vertex``."""
    kind = vertex.kind
    if kind == "source":
        return SourceOp(vertex)
    if kind == "build":
        return _BuildOp(vertex)
    found = _KINDS.get(kind)
    if found is None:
        return _Unsupported(vertex)
    module = importlib.import_module(f"llbkit.core.solver.ops.{found[0]}")
    cls: type[Op] = getattr(module, found[1])
    return cls(vertex)


def __getattr__(name: str) -> object:
    for module, cls in _KINDS.values():
        if cls == name:
            return getattr(importlib.import_module(f"llbkit.core.solver.ops.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
