"""MergeOps and DiffOps: chains put together or taken apart, copying only what they must."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio

from llbkit.core.cache import shares
from llbkit.core.cache.store import Chain, Store
from llbkit.core.fs.iterative import rmtree
from llbkit.core.snapshot.layers import diff_trees
from llbkit.core.solver.ops.base import Op, OpContext

__all__ = ["DiffOp", "MergeOp"]


class MergeOp(Op):
    kind = "merge"

    def default_name(self, names: Mapping[str, str]) -> str:
        return "merge (" + ", ".join(names[i.digest] for i in self.op.inputs) + ")"

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        return [await anyio.to_thread.run_sync(_merge, ctx.store, inputs, limiter=ctx.threads)]


def _merge(store: Store, inputs: Sequence[Chain]) -> Chain:
    """The concatenation of the inputs' layers (a layer shared by several appears once; one
    holding files linked from an earlier one is copied, see :mod:`llbkit.core.cache.shares`)."""
    merged = dict.fromkeys(layer for chain in inputs for layer in chain)
    return store.compact(shares.separate(store, tuple(merged)))


class DiffOp(Op):
    kind = "diff"

    def default_name(self, names: Mapping[str, str]) -> str:
        def side(index: int) -> str:
            return "scratch" if index < 0 else f"({names[self.op.inputs[index].digest]})"

        diff = self.op.diff
        return f"diff {side(diff.lower.input)} -> {side(diff.upper.input)}"

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        diff = self.op.diff
        lower = inputs[diff.lower.input] if diff.lower.input >= 0 else ()
        upper = inputs[diff.upper.input] if diff.upper.input >= 0 else ()
        return [
            await anyio.to_thread.run_sync(
                _diff, ctx.store, lower, upper, ctx.name, limiter=ctx.threads
            )
        ]


def _diff(store: Store, lower: Chain, upper: Chain, name: str) -> Chain:
    """What turns ``lower`` into ``upper``: a suffix of layers when ``lower`` is their base."""
    if upper[: len(lower)] == lower:
        return upper[len(lower) :]
    stage = store.stage()
    try:
        out = stage / "diff"
        out.mkdir()
        with store.view(lower) as low, store.view(upper) as up:
            diff_trees(low if lower else None, up, out, store.format)
        return (store.commit_layer(out, description=name),)
    finally:
        rmtree(stage, ignore_errors=True)
