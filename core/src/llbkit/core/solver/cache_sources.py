"""Where the solver looks for results before running anything: the local store, then the caches
imported for the build (``--import-cache``), in the order given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llbkit.core.cache.lazy import fetchable
from llbkit.core.cache.store import Chain, Store

if TYPE_CHECKING:
    from llbkit.core.cache.linkgraph import LinkGraph

__all__ = ["CacheChain", "CacheSource", "Hit", "LinkedSource", "LocalCache"]


@dataclass(frozen=True)
class Hit:
    """A cached result: its portable key, its chain in the local store, where it was found."""

    key: str
    chain: Chain
    source: str


class CacheSource(Protocol):
    """One place results can be found by key. Lookups run in worker threads."""

    @property
    def name(self) -> str:
        """For progress and explanations (``local``, ``registry:ref``)."""
        ...

    def lookup(self, key: str) -> Hit | None:
        """The result ``key`` finds, held by the running build's lease; ``None`` on a miss."""
        ...


@runtime_checkable
class LinkedSource(CacheSource, Protocol):
    """A cache whose records may be BuildKit's: found by BuildKit's keys, walking the links
    of :meth:`links` from the records of a step's inputs (see
    :mod:`llbkit.core.solver.buildkit_keys`)."""

    def links(self) -> LinkGraph:
        """The cache's records as a graph (empty: none to walk)."""
        ...

    def lookup_node(self, node: int, key: str) -> Hit | None:
        """The result of the graph's record ``node``, recorded locally under ``key``; ``None``
        when the cache lacks its blobs."""
        ...


class LocalCache:
    """The engine's own store."""

    name = "local"

    def __init__(self, store: Store) -> None:
        self.store = store

    def lookup(self, key: str) -> Hit | None:
        found = self.store.lookup(key)
        if found is None or not fetchable(self.store, found[1]):
            return None  # imported earlier by a process whose cache this one cannot reach
        return Hit(found[0], found[1], self.name)


class CacheChain:
    """Cache sources asked in order; the first hit wins."""

    def __init__(self, sources: Sequence[CacheSource]) -> None:
        self.sources = list(sources)

    def with_imports(self, imported: Sequence[CacheSource]) -> CacheChain:
        """This chain followed by a build's imported caches."""
        return CacheChain([*self.sources, *imported])

    def lookup(self, key: str) -> Hit | None:
        for source in self.sources:
            hit = source.lookup(key)
            if hit is not None:
                return hit
        return None
