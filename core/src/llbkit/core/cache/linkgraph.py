"""A cache config's records as BuildKit's importer holds them: a graph walked by links.

BuildKit finds a step's record by following, from each record its input matched, the links
marked with the input's index, the record's digest and the selector; the step hits the records
reached from every input. A record without inputs (an image's) is found by its digest alone.
Two records with one digest are the same op on other inputs: each keeps its own results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llbkit.core.cache.remote import RemoteLayer

__all__ = ["LinkGraph", "LinkNode"]

#: (input index, the linked record's digest, selector)
Link = tuple[int, str, str]


@dataclass
class LinkNode:
    """One record: its digest, its results, and the records linked from it."""

    digest: str
    chains: list[tuple[RemoteLayer, ...]] = field(default_factory=list)
    links: dict[Link, list[int]] = field(default_factory=dict)


class LinkGraph:
    """The records of one cache, as nodes."""

    def __init__(self) -> None:
        self.nodes: list[LinkNode] = []
        self.roots: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def add(
        self,
        records: Sequence[tuple[str, list[tuple[RemoteLayer, ...]], list[list[tuple[str, int]]]]],
    ) -> None:
        """Add a config's records: each ``(digest, chains, inputs)``, its inputs' links as
        ``(selector, index of the linked record)`` in ``records``."""
        ids: list[int] = []
        for digest, chains, inputs in records:
            if not inputs:  # found by digest: one node per digest, its results together
                known = self.roots.get(digest)
                if known is None:
                    known = self.roots[digest] = len(self.nodes)
                    self.nodes.append(LinkNode(digest))
                self.nodes[known].chains.extend(chains)
                ids.append(known)
            else:
                ids.append(len(self.nodes))
                self.nodes.append(LinkNode(digest, list(chains)))
        for (digest, _, inputs), node in zip(records, ids, strict=True):
            for index, links in enumerate(inputs):
                for selector, source in links:
                    if 0 <= source < len(ids):
                        targets = self.nodes[ids[source]].links.setdefault(
                            (index, digest, selector), []
                        )
                        if node not in targets:
                            targets.append(node)

    def extend(self, other: LinkGraph) -> None:
        """Add another cache's records (another platform's inline cache)."""
        ids: list[int] = []
        for node in other.nodes:
            known = self.roots.get(node.digest) if node.digest in other.roots else None
            if known is not None:
                self.nodes[known].chains.extend(node.chains)
                ids.append(known)
                continue
            if node.digest in other.roots:
                self.roots[node.digest] = len(self.nodes)
            ids.append(len(self.nodes))
            self.nodes.append(LinkNode(node.digest, list(node.chains)))
        for node, new in zip(other.nodes, ids, strict=True):
            links = self.nodes[new].links
            for link, targets in node.links.items():
                mine = links.setdefault(link, [])
                mine.extend(ids[t] for t in targets if ids[t] not in mine)

    def root(self, digest: str) -> set[int]:
        """The record found by ``digest`` alone, if any."""
        found = self.roots.get(digest)
        return set() if found is None else {found}

    def linked(self, sources: Iterable[int], input: int, digest: str, selector: str) -> set[int]:
        """The records with ``digest`` that ``sources`` link to as input ``input``."""
        found: set[int] = set()
        for source in sources:
            found.update(self.nodes[source].links.get((input, digest, selector), ()))
        return found
