"""FileOps: mkdir, mkfile, rm and copy actions, each writing a new layer over its base."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from llbkit.core.cache.store import Chain, Store, WorkTree
from llbkit.core.llb import pb
from llbkit.core.snapshot.layers import apply_layer
from llbkit.core.solver.ops.base import Op, OpContext

if TYPE_CHECKING:
    from llbkit.core.ops.borrow import Borrowed
    from llbkit.core.ops.file import Deferred

# What runs a file op (llbkit.core.ops.file and what it imports) is imported when one first
# runs: a build whose file ops are all cached only makes their keys. A build that runs one
# imports it while it waits on the registry (llbkit.core.ahead, ops_most_used).

__all__ = ["FileOp", "owner_inputs"]


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


class FileOp(Op):
    kind = "file"

    def default_name(self, names: Mapping[str, str]) -> str:
        parts = []
        for action in self.op.file.actions:
            which = action.WhichOneof("action")
            if which == "copy":
                parts.append(f"copy {action.copy.src} {action.copy.dest}")
            elif which in ("mkdir", "mkfile", "rm"):
                parts.append(f"{which} {getattr(action, which).path}")
        return ", ".join(parts)

    def content_inputs(self) -> Mapping[int, Sequence[pb.FileActionCopy]]:
        """Inputs only copied from (not a base, not read for owner names)."""
        reads: dict[int, list[pb.FileActionCopy]] = {}
        based: set[int] = set()
        count = len(self.op.inputs)
        for action in self.op.file.actions:
            if 0 <= action.input < count:
                based.add(action.input)
            if action.WhichOneof("action") == "copy" and 0 <= action.secondaryInput < count:
                reads.setdefault(action.secondaryInput, []).append(action.copy)
            based.update(i for i in owner_inputs(action) if 0 <= i < count)
        return {i: copies for i, copies in reads.items() if i not in based}

    def _read_inputs(self) -> set[int]:
        """Inputs a file op reads files from: copy sources and ``/etc/passwd`` for owners."""
        read: set[int] = set()
        for action in self.op.file.actions:
            if action.WhichOneof("action") == "copy":
                read.add(action.secondaryInput)
            read.update(owner_inputs(action))
        return read

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        return await anyio.to_thread.run_sync(
            self._run, ctx.store, inputs, ctx.name, limiter=ctx.threads
        )

    def _run(self, store: Store, inputs: Sequence[Chain], name: str) -> list[Chain]:
        """Each action's base becomes a writable tree over its chain; read inputs are views.

        Files copied unchanged from an input are linked (inputs are immutable layers); a copy
        onto an overlay tree runs before the overlay is mounted, for those links to be
        possible, unless it meets something only the mounted tree does exactly (then the op
        runs again, mounted).
        """
        from llbkit.core.ops.file import NeedsMount

        try:
            return self._attempt(store, inputs, name, defer=store.format == "overlay")
        except NeedsMount:
            return self._attempt(store, inputs, name, defer=False)

    def _attempt(
        self, store: Store, inputs: Sequence[Chain], name: str, *, defer: bool, share: bool = True
    ) -> list[Chain]:
        """One run; ``defer``: copies may write unmounted uppers; ``share``: may link files."""
        from llbkit.core.cache import shares
        from llbkit.core.ops.file import run_file_op

        read = self._read_inputs()
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
            #: a tree made for a deferred copy that the store mounted at once (a deep chain)
            ready: dict[Path, WorkTree] = {}

            def workdir(base: Path | None) -> Path:
                if base is not None and base in ready:
                    return ready.pop(base).path
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

            def deferred(base: Path) -> Deferred | None:
                if base not in chain_of or not chain_of[base]:
                    return None
                tree = store.work_tree(chain_of[base], name, defer=True)
                stack.callback(tree.close)
                trees[tree.path] = tree
                if tree.deferred:
                    return tree
                ready[base] = tree
                return None

            blocked: dict[tuple[int, Path], frozenset[int] | None] = {}

            def may_share(source: int, tree: Path) -> frozenset[int] | None:
                """Only a one-layer input is its layer's own files (more are a mount)."""
                if (source, tree) not in blocked:
                    chain = inputs[source]
                    found = None
                    if share and len(chain) == 1 and tree in trees:
                        found = shares.blocked(store, chain[0], trees[tree].chain)
                    blocked[source, tree] = found
                return blocked[source, tree]

            borrowed: dict[Path, Borrowed] = {}
            outputs = run_file_op(
                self.op,
                paths,
                workdir,
                deferred=deferred if defer else None,
                share=may_share,
                borrowed=borrowed,
            )
            results = []
            for path in outputs:
                chain = trees[path].commit()
                for source, inodes in borrowed[path].linked().items():
                    shares.record_links(store, chain[-1], inputs[source][0], inodes)
                results.append(chain)
            return results
