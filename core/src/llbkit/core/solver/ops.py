"""Running the ops that need no container on the store: file, merge and diff.

Each takes its inputs' chains and returns its outputs' chains. They run in worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from llbkit.core.cache.store import Chain, Store, WorkTree
from llbkit.core.llb import pb
from llbkit.core.ops.file import run_file_op
from llbkit.core.snapshot.layers import apply_layer, diff_trees
from llbkit.core.solver.keys import owner_inputs

__all__ = ["run_diff", "run_file", "run_merge"]


def run_file(store: Store, op: pb.Op, inputs: Sequence[Chain], name: str) -> list[Chain]:
    """A FileOp's action chain: each action's base becomes a writable tree over its chain."""
    read = _read_inputs(op)
    with ExitStack() as stack:
        paths: list[Path | None] = []
        chain_of: dict[Path, Chain] = {}
        for n, chain in enumerate(inputs):
            # Only inputs whose files are read get mounted; a base only seeds a work tree.
            if n in read:
                path = stack.enter_context(store.view(chain))
            else:
                path = store.tmp / f"unread-input-{n}"
            paths.append(path)
            chain_of[path] = chain
        trees: dict[Path, WorkTree] = {}

        def workdir(base: Path | None) -> Path:
            if base is None:
                tree = store.work_tree((), name)
            elif base in chain_of:
                tree = store.work_tree(chain_of[base], name)
            else:
                # An intermediate result read twice: the later action gets its own copy.
                tree = store.work_tree((), name)
                apply_layer(base, tree.path, "plain")
            stack.callback(tree.close)
            trees[tree.path] = tree
            return tree.path

        outputs = run_file_op(op, paths, workdir)
        return [trees[path].commit() for path in outputs]


def _read_inputs(op: pb.Op) -> set[int]:
    """Inputs a file op reads files from: copy sources and ``/etc/passwd`` for owner names."""
    read: set[int] = set()
    for action in op.file.actions:
        kind = action.WhichOneof("action")
        if kind == "copy":
            read.add(action.secondaryInput)
        read.update(owner_inputs(action))
    return read


def run_merge(store: Store, inputs: Sequence[Chain]) -> Chain:
    """The concatenation of the inputs' layers (a layer shared by several appears once)."""
    seen: set[int] = set()
    merged: list[int] = []
    for chain in inputs:
        for layer in chain:
            if layer not in seen:
                seen.add(layer)
                merged.append(layer)
    return store.compact(tuple(merged))


def run_diff(store: Store, lower: Chain, upper: Chain, name: str) -> Chain:
    """What turns ``lower`` into ``upper``: a suffix of layers when ``lower`` is their base."""
    if upper[: len(lower)] == lower:
        return upper[len(lower) :]
    stage = store.stage()
    out = stage / "diff"
    out.mkdir()
    with store.view(lower) as low, store.view(upper) as up:
        diff_trees(low if lower else None, up, out, store.format)
    return (store.commit_layer(out, description=name),)
