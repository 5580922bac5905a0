"""A state read back from a marshaled definition, as Go's ``llb.NewDefinitionOp`` reads one
(a frontend's input, ``--opt context:NAME=input:KEY``): its ops marshal again byte for byte,
so a graph built on it names the same digests as the graph it came from."""

from __future__ import annotations

from collections.abc import Sequence

from llbkit.core.errors import UserError
from llbkit.core.llb import digest_of, pb
from llbkit.sdk.llb._vertex import Marshaler, Output, Vertex
from llbkit.sdk.llb.state import State

__all__ = ["from_definition"]


class _Graph:
    """The ops of one definition by digest, each made a vertex once."""

    def __init__(self, definition: pb.Definition) -> None:
        self.ops = {digest_of(data): data for data in getattr(definition, "def")}
        self.metadata = definition.metadata
        self._vertices: dict[str, DefinitionVertex] = {}

    def vertex(self, digest: str) -> DefinitionVertex:
        if digest not in self.ops:
            raise UserError(f"invalid definition: no op {digest}")
        found = self._vertices.get(digest)
        if found is None:
            found = self._vertices[digest] = DefinitionVertex(self, digest)
        return found


class DefinitionVertex(Vertex):
    """One op of a marshaled definition, marshaled again as it was."""

    def __init__(self, graph: _Graph, digest: str) -> None:
        self._graph = graph
        self.digest = digest
        self._op = pb.Op.FromString(graph.ops[digest])

    def inputs(self) -> Sequence[Output]:
        return [Output(self._graph.vertex(i.digest), i.index) for i in self._op.inputs]

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        return pb.Op.FromString(self._graph.ops[self.digest]), self._metadata()

    def marshaled(self, m: Marshaler) -> tuple[bytes, pb.OpMetadata]:
        return self._graph.ops[self.digest], self._metadata()

    def _metadata(self) -> pb.OpMetadata:
        meta = pb.OpMetadata()
        if self.digest in self._graph.metadata:
            meta.CopyFrom(self._graph.metadata[self.digest])
        return meta


def from_definition(data: bytes) -> State:
    """The state a marshaled ``pb.Definition`` (``State.marshal().to_bytes()``, Go's
    ``Definition.ToPB``) ends in; scratch for an empty one."""
    try:
        definition = pb.Definition.FromString(data)
        ops = list(getattr(definition, "def"))
        terminal = pb.Op.FromString(ops[-1]) if ops else None
    except Exception as err:  # protobuf's DecodeError, and what a truncated message raises
        raise UserError(f"invalid definition: {err}") from None
    if terminal is None or not terminal.inputs:
        return State()
    head = terminal.inputs[0]
    return State(output=Output(_Graph(definition).vertex(head.digest), head.index))
