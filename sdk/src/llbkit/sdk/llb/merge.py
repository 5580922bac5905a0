"""Merge and diff ops: layering states, and the changes between two states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llbkit.core.llb import pb
from llbkit.sdk.llb._vertex import Marshaler, Options, Output, Vertex, add_caps
from llbkit.sdk.llb.state import State

__all__ = ["diff", "merge"]


@dataclass(eq=False)
class MergeOp(Vertex):
    """A ``pb.MergeOp``: inputs layered in order; not platform specific."""

    sources: tuple[Output, ...]
    options: Options

    def inputs(self) -> Sequence[Output]:
        return self.sources

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        op, meta = m.op_base(self.options, None)
        op.ClearField("platform")
        for output in self.sources:
            op.merge.inputs.add(input=len(op.inputs))
            op.inputs.append(m.input(output))
        add_caps(meta, "mergeop")
        return op, meta


@dataclass(eq=False)
class DiffOp(Vertex):
    """A ``pb.DiffOp``: what ``upper`` changes relative to ``lower``."""

    lower: Output | None
    upper: Output | None
    options: Options

    def inputs(self) -> Sequence[Output]:
        return [o for o in (self.lower, self.upper) if o is not None]

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        op, meta = m.op_base(self.options, None)
        op.ClearField("platform")
        op.diff.lower.input = -1
        if self.lower is not None:
            op.diff.lower.input = len(op.inputs)
            op.inputs.append(m.input(self.lower))
        op.diff.upper.input = -1
        if self.upper is not None:
            op.diff.upper.input = len(op.inputs)
            op.inputs.append(m.input(self.upper))
        add_caps(meta, "diffop")
        return op, meta


def merge(states: Sequence[State], **options: object) -> State:
    """Layer ``states`` in order (later ones win); scratch inputs are dropped, as in Go."""
    kept = [s for s in states if s.output is not None]
    if not kept:
        return State()
    if len(kept) == 1:
        return kept[0]
    outputs = tuple(s.output for s in kept if s.output is not None)
    return State(output=Output(MergeOp(outputs, Options(**options)), 0))  # type: ignore[arg-type]


def diff(lower: State, upper: State, **options: object) -> State:
    """The changes that turn ``lower`` into ``upper``, as a state of its own."""
    if lower.output is None:
        return upper if upper.output is not None else State()
    op = DiffOp(lower.output, upper.output, Options(**options))  # type: ignore[arg-type]
    return State(output=Output(op, 0))
