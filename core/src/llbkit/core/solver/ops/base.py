"""The op interface: what the solver asks of every kind of op.

Each LLB op kind is one class that knows its name in progress, how many outputs it has, the
part of its cache key that comes from the op itself (its cache map, in BuildKit's words), which
inputs it reads content from, and how to run on its inputs' chains. The solver only schedules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import anyio

from llbkit.core.cache.store import Chain, Store
from llbkit.core.errors import UserError
from llbkit.core.llb import pb
from llbkit.core.llb.definition import Vertex, output_count
from llbkit.core.llb.marshal import marshal
from llbkit.core.solver.keys import sha

if TYPE_CHECKING:
    from llbkit.core.drivers import Drivers
    from llbkit.core.plugins.context import ClientIO
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.solver.ops.exec import CacheMounts

__all__ = ["Op", "OpContext"]


@dataclass(frozen=True)
class OpContext:
    """What running one op may use.

    :param name: the vertex's name in progress (layer descriptions use it).
    :param allow: the entitlements the build was granted.
    :param threads: the limiter for blocking work in worker threads.
    """

    store: Store
    drivers: Drivers
    client: ClientIO
    progress: ProgressSink
    #: the engine's cache mount directories, made on first use
    cache_mounts: Callable[[], CacheMounts]
    name: str
    allow: Sequence[str]
    threads: anyio.CapacityLimiter
    #: no step of the build reads the op's files (only an export, as blobs): an image may
    #: then stay unpulled until something does (:class:`~llbkit.core.plugins.source.LazySourceJob`)
    blobs_only: bool = False


class Op:
    """One vertex's op, as the solver handles it. Subclasses set :attr:`kind`."""

    kind: ClassVar[str]

    def __init__(self, vertex: Vertex) -> None:
        self.vertex = vertex
        self.op: pb.Op = vertex.op

    @property
    def outputs(self) -> int:
        """How many results running it gives."""
        return output_count(self.op)

    def default_name(self, names: Mapping[str, str]) -> str:
        """The name progress shows when the definition gives none (``llb.customname``);
        ``names`` holds the names of the inputs."""
        return self.kind

    def name(self, names: Mapping[str, str]) -> str:
        return self.vertex.metadata.description.get("llb.customname") or self.default_name(names)

    def definition_digest(self) -> str:
        """The digest of the op without what must not change its cache key (its inputs)."""
        norm = pb.Op()
        norm.CopyFrom(self.op)
        del norm.inputs[:]
        return sha(marshal(norm))

    def content_inputs(self) -> Mapping[int, Sequence[pb.FileActionCopy]]:
        """Inputs the op reads only some paths of (a copy's source), with what it reads: a
        second cache key names them by the checksum of those paths."""
        return {}

    def selectors(self) -> Mapping[int, str]:
        """Per input, the paths read from it, as BuildKit joins them (sorted, NUL)."""
        return {
            i: "\0".join(sorted({c.src for c in copies}, reverse=True))
            for i, copies in self.content_inputs().items()
        }

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        """Produce the outputs' chains from the inputs' chains; runs only on a cache miss."""
        raise UserError(f"{self.vertex.kind} ops are not supported by this release of llbkit")
