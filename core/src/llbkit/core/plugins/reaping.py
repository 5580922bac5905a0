"""A worker that stops, on its own, what a killed owner of its state left running.

Shared vocabulary of the worker contract: the engine calls :meth:`Reaping.reap` when it takes
its state root (an embedded build of any kind, ``prune``, llbkitd's start) and prints what was
stopped. A worker without it has nothing to reap or reaps as its executor starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Reaping"]


@runtime_checkable
class Reaping(Protocol):
    """A worker (the ``Worker`` driver, not its executor) that can reap without a build."""

    async def reap(self, config: Mapping[str, object]) -> Sequence[str]:
        """Stop and delete the containers a killed owner of this state left running; their
        names. Starts nothing when nothing was left (builds that run no process stay cheap)."""
        ...
