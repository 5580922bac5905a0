"""One class per LLB op kind (see :mod:`.base`); :func:`op_for` picks it for a vertex."""

from __future__ import annotations

from collections.abc import Mapping

from llbkit.core.llb.definition import Vertex
from llbkit.core.solver.ops.base import Op, OpContext
from llbkit.core.solver.ops.exec import ExecOp
from llbkit.core.solver.ops.file import FileOp
from llbkit.core.solver.ops.merge import DiffOp, MergeOp
from llbkit.core.solver.ops.source import SourceOp

__all__ = ["DiffOp", "ExecOp", "FileOp", "MergeOp", "Op", "OpContext", "SourceOp", "op_for"]


class _Unsupported(Op):
    """Build and passthrough ops: loaded and named, refused when they would run."""

    kind = "unknown"


class _BuildOp(_Unsupported):
    kind = "build"


_KINDS: Mapping[str, type[Op]] = {
    cls.kind: cls for cls in (SourceOp, ExecOp, FileOp, MergeOp, DiffOp, _BuildOp)
}


def op_for(vertex: Vertex) -> Op:
    """The op object for ``vertex``."""
    return _KINDS.get(vertex.kind, _Unsupported)(vertex)
