"""Leases: what running builds hold, so that GC and ``prune`` never take it.

Every result a build touches (a cache hit, an input, what a step made, what the frontend
solved, what an exporter reads) is added to the build's lease at the moment it is found, under
the store's lock, so there is no instant at which GC could see it unheld. A lease ends with its
build. Short holds (a view, a work tree) use the same counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Lease", "LeaseTable", "current_lease"]

#: the lease of the build whose task (or worker thread) runs now; the store adds every layer it
#: commits or finds to it, as BuildKit binds containerd leases to a context
current_lease: ContextVar[Lease | None] = ContextVar("llbkit_lease", default=None)


class LeaseTable:
    """Hold counts per layer; a layer with a count is in use.

    :param on_add: told the layers a named lease takes (the store writes them down, so that
        ``du`` in another process sees what running builds hold).
    :param on_release: told a named lease ended.
    """

    def __init__(
        self,
        lock: threading.RLock,
        *,
        on_add: Callable[[str, Iterable[int]], None] | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        self.lock = lock
        self._counts: Counter[int] = Counter()
        self._on_add = on_add
        self._on_release = on_release

    def acquire(self, layers: Iterable[int]) -> None:
        with self.lock:
            self._counts.update(layers)

    def release(self, layers: Iterable[int]) -> None:
        with self.lock:
            self._counts.subtract(layers)
            for layer in [n for n, c in self._counts.items() if c <= 0]:
                del self._counts[layer]

    def held(self) -> set[int]:
        """Layers something holds now."""
        with self.lock:
            return set(self._counts)

    def is_held(self, layer: int) -> bool:
        with self.lock:
            return self._counts.get(layer, 0) > 0

    def lease(self, name: str) -> Lease:
        """A new, empty lease."""
        return Lease(self, name)


class Lease:
    """The layers one owner (a build) holds until :meth:`release`."""

    def __init__(self, table: LeaseTable, name: str) -> None:
        self.table = table
        self.name = name
        self._layers: set[int] = set()
        self._released = False

    def add(self, layers: Iterable[int]) -> None:
        """Hold ``layers`` (idempotent); call with the store's lock held to close the gap
        between finding a result and holding it."""
        with self.table.lock:
            if self._released:
                raise RuntimeError(f"lease {self.name} was released")
            new = set(layers) - self._layers
            if not new:
                return
            self._layers |= new
            self.table.acquire(new)
            if self.table._on_add is not None:
                self.table._on_add(self.name, new)

    @property
    def layers(self) -> frozenset[int]:
        return frozenset(self._layers)

    @contextmanager
    def bound(self) -> Iterator[Lease]:
        """Make this the current lease for the block (and the tasks and threads it starts)."""
        token = current_lease.set(self)
        try:
            yield self
        finally:
            current_lease.reset(token)

    def release(self) -> None:
        """Let go of everything (idempotent)."""
        with self.table.lock:
            if not self._released:
                self._released = True
                self.table.release(self._layers)
                if self._layers and self.table._on_release is not None:
                    self.table._on_release(self.name)
                self._layers.clear()
