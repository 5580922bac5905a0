"""Leases: what running builds hold, so that GC and ``prune`` never take it.

Every result a build touches (a cache hit, an input, what a step made, what the frontend
solved, what an exporter reads) is added to the build's lease at the moment it is found, under
the store's lock, so there is no instant at which GC could see it unheld. A lease ends with its
build. Short holds (a view, a work tree) use the same counts.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Lease", "LeaseTable", "current_lease"]

#: seconds between writes of what leases took, for readers in other processes
WRITE_EVERY = 0.5

#: the lease of the build whose task (or worker thread) runs now; the store adds every layer it
#: commits or finds to it, as BuildKit binds containerd leases to a context
current_lease: ContextVar[Lease | None] = ContextVar("llbkit_lease", default=None)


class LeaseTable:
    """Hold counts per layer; a layer with a count is in use.

    Two locks, always taken in this order: ``outer`` (the store's) around what must be atomic
    with the store's records (a lease taking what a commit or a lookup just made or found,
    prune checking what is held before deleting), then the table's own for the counts, so that
    short holds (a view, a work tree) never wait for a database transaction.

    :param on_add: told the layers named leases took (the store writes them down, so that
        ``du`` in another process sees what running builds hold); told in batches, at most
        every :data:`WRITE_EVERY` seconds, so a build's thousand steps are not a thousand
        extra writes.
    :param on_release: told a named lease ended.
    """

    def __init__(
        self,
        outer: threading.RLock,
        *,
        on_add: Callable[[str, Iterable[int]], None] | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        self.outer = outer
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._on_add = on_add
        self._on_release = on_release
        self._unwritten: dict[str, set[int]] = {}
        self._written_at = 0.0
        #: writes what a burst left unwritten once the burst is over
        self._timer: threading.Timer | None = None
        self._closed = False

    def _taken(self, lease: str, layers: set[int]) -> None:
        """A named lease took ``layers`` (called with ``outer`` held)."""
        if self._on_add is None or self._closed:
            return
        self._unwritten.setdefault(lease, set()).update(layers)
        wait = self._written_at + WRITE_EVERY - time.monotonic()
        if wait <= 0:
            self._write()
        elif self._timer is None:
            self._timer = threading.Timer(wait, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _write(self) -> None:
        assert self._on_add is not None
        self._written_at = time.monotonic()
        unwritten, self._unwritten = self._unwritten, {}
        for name, taken in unwritten.items():
            self._on_add(name, taken)

    def _flush(self) -> None:
        with self.outer:
            self._timer = None
            if self._unwritten and not self._closed:
                self._write()

    def _ended(self, lease: str) -> None:
        """A named lease ended (called with ``outer`` held)."""
        self._unwritten.pop(lease, None)
        if self._on_release is not None and not self._closed:
            self._on_release(lease)

    def close(self) -> None:
        """Stop writing (the database is closing; its lease rows are cleared when it opens)."""
        with self.outer:
            self._closed = True
            self._unwritten.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def acquire(self, layers: Iterable[int]) -> None:
        with self._lock:
            self._counts.update(layers)

    def release(self, layers: Iterable[int]) -> None:
        with self._lock:
            for layer in layers:
                left = self._counts[layer] - 1
                if left > 0:
                    self._counts[layer] = left
                else:
                    del self._counts[layer]

    def held(self) -> set[int]:
        """Layers something holds now."""
        with self._lock:
            return set(self._counts)

    def is_held(self, layer: int) -> bool:
        """Whether ``layer`` is held (call with ``outer`` held to act on the answer)."""
        with self._lock:
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
        self._then: list[Callable[[], None]] = []

    def add(self, layers: Iterable[int]) -> None:
        """Hold ``layers`` (idempotent). Takes the store's lock; call it inside the block
        that found or made the layers, so that nothing can delete them in between."""
        layers = set(layers)
        if not layers - self._layers:
            return  # already held: no need to wait for the store's lock
        with self.table.outer:
            if self._released:
                raise RuntimeError(f"lease {self.name} was released")
            new = set(layers) - self._layers
            if not new:
                return
            self._layers |= new
            self.table.acquire(new)
            self.table._taken(self.name, new)

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

    def when_released(self, then: Callable[[], None]) -> None:
        """Call ``then`` once this lease is released (at once if it is): what a build offers
        only while it holds its results (how to fetch an image's blobs) goes with them."""
        if self._released:
            then()
        else:
            self._then.append(then)

    def release(self) -> None:
        """Let go of everything (idempotent)."""
        with self.table.outer:
            if not self._released:
                self._released = True
                self.table.release(self._layers)
                if self._layers:
                    self.table._ended(self.name)
                self._layers.clear()
        then, self._then = self._then, []
        for call in then:
            call()
