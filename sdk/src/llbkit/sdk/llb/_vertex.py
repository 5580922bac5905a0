"""What every LLB vertex shares: outputs, per-op constraints, and marshaling into one definition."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llbkit.core.llb import digest_of, marshal, pb
from llbkit.core.plugins.context import Platform

if TYPE_CHECKING:
    from llbkit.sdk.llb.state import State

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_platform() -> Platform:
    """The platform of this machine, as BuildKit's client defaults to its own."""
    machine = os.uname().machine.lower()
    return Platform("linux", _ARCHES.get(machine, machine))


@dataclass(frozen=True)
class Options:
    """Per-op settings that live outside the op body (metadata) or beside it (platform).

    :param custom_name: shown in progress instead of the op's own name (``llb.customname``).
    :param ignore_cache: always run this op, never reuse a cached result.
    :param description: extra ``OpMetadata.description`` entries.
    :param progress_group: ``(id, name)`` to group ops in progress output.
    :param platform: the platform this op is for; by default the state's, then the build's.
    :param worker_constraints: containerd filters a worker must match.
    """

    custom_name: str = ""
    ignore_cache: bool = False
    description: Mapping[str, str] = field(default_factory=dict)
    progress_group: tuple[str, str] | None = None
    platform: Platform | None = None
    worker_constraints: Sequence[str] = ()


class Marshaler:
    """One marshal pass: ops in post-order, deduplicated by digest, metadata merged per digest."""

    def __init__(self, platform: Platform | None) -> None:
        self.platform = platform or default_platform()
        self.ops: list[bytes] = []
        self.metadata: dict[str, pb.OpMetadata] = {}
        #: source-map locations by op digest; every op has an entry, empty without source maps
        self.locations: dict[str, list[pb.Location]] = {}
        self._done: dict[int, str] = {}
        self._seen: set[str] = set()

    def add(self, vertex: Vertex) -> str:
        """Marshal ``vertex`` after its inputs; returns its digest."""
        known = self._done.get(id(vertex))
        if known is not None:
            return known
        # Inputs first, without recursion: a chain of thousands of ops is a normal graph.
        stack: list[tuple[Vertex, bool]] = [(vertex, False)]
        pending: set[int] = set()
        while stack:
            top, expanded = stack.pop()
            if id(top) in self._done:
                continue
            if expanded or id(top) in pending:
                if top is not vertex:
                    self._add_one(top)
                continue
            pending.add(id(top))
            stack.append((top, True))
            stack.extend(
                (o.vertex, False)
                for o in reversed(list(top.inputs()))
                if id(o.vertex) not in self._done
            )
        return self._add_one(vertex)

    def _add_one(self, vertex: Vertex) -> str:
        """Marshal ``vertex`` whose inputs are all marshaled already."""
        known = self._done.get(id(vertex))
        if known is not None:
            return known
        data, meta = vertex.marshaled(self)
        digest = digest_of(data)
        self._done[id(vertex)] = digest
        self.locations.setdefault(digest, [])
        merged = self.metadata.setdefault(digest, pb.OpMetadata())
        _merge_metadata(merged, meta)
        if digest not in self._seen:
            self._seen.add(digest)
            self.ops.append(data)
        return digest

    def input(self, output: Output) -> pb.Input:
        """The ``pb.Input`` naming ``output`` (marshaling its vertex if needed)."""
        return pb.Input(digest=self.add(output.vertex), index=output.index)

    def op_base(
        self, options: Options, state_platform: Platform | None
    ) -> tuple[pb.Op, pb.OpMetadata]:
        """An op carrying platform and constraints, and its metadata, as Go's client sets them."""
        chosen = options.platform or state_platform or self.platform
        op = pb.Op()
        op.platform.OS = chosen.os
        op.platform.Architecture = chosen.architecture
        if chosen.variant:
            op.platform.Variant = chosen.variant
        op.constraints.SetInParent()
        op.constraints.filter.extend(options.worker_constraints)
        meta = pb.OpMetadata(ignore_cache=options.ignore_cache)
        for key, value in options.description.items():
            meta.description[key] = value
        if options.custom_name:
            meta.description["llb.customname"] = options.custom_name
        if options.progress_group is not None:
            meta.progress_group.id, meta.progress_group.name = options.progress_group
        return op, meta


def _merge_metadata(into: pb.OpMetadata, new: pb.OpMetadata) -> None:
    if new.ignore_cache:
        into.ignore_cache = True
    for key, value in new.description.items():
        into.description[key] = value
    for key, flag in new.caps.items():
        into.caps[key] = flag
    if new.HasField("export_cache"):
        into.export_cache.CopyFrom(new.export_cache)
    if new.HasField("progress_group"):
        into.progress_group.CopyFrom(new.progress_group)


class Vertex:
    """An op of the graph. Subclasses say what they read and how they marshal."""

    def inputs(self) -> Sequence[Output]:
        """The outputs of other vertices this op reads, in marshal order."""
        return ()

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        """Build the op (inputs named through ``m``) and its metadata, caps included."""
        raise NotImplementedError

    def marshaled(self, m: Marshaler) -> tuple[bytes, pb.OpMetadata]:
        """The op's bytes and its metadata: :meth:`to_op`'s, marshaled."""
        op, meta = self.to_op(m)
        return marshal(op), meta


@dataclass(frozen=True, eq=False)
class Output:
    """Output ``index`` of ``vertex``: what a state points at."""

    vertex: Vertex
    index: int = 0


def add_caps(meta: pb.OpMetadata, *caps: str) -> None:
    """Record capabilities the op relies on, as Go's client does in ``OpMetadata.caps``."""
    for cap in caps:
        meta.caps[cap] = True


def with_platform(state: State, platform: Platform | None) -> State:
    """``state`` with its platform replaced (helper for sources that take one)."""
    return replace(state, platform=platform) if platform is not None else state
