"""Loading an LLB ``pb.Definition`` and proving it is a sane graph before anything runs.

Every op is hashed from the bytes received (never re-marshaled), every reference is checked,
and anything malformed is one :class:`~llbkit.core.errors.DefinitionError` line that names the
source, the op and the field. BuildKit v0.11.6's daemon panics on some of these; we must not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from llbkit.core.errors import DefinitionError
from llbkit.core.llb._pb import ops_pb2 as pb
from llbkit.core.llb.digest import digest_of, short

__all__ = ["LoadedDefinition", "Vertex", "is_empty_definition", "load_definition", "output_count"]

_SINGLE_OUTPUT = frozenset({"source", "merge", "diff", "build"})


@dataclass(frozen=True)
class Vertex:
    """One op of a definition: its position, digest, parsed form, raw bytes and metadata."""

    position: int
    digest: str
    op: pb.Op
    data: bytes
    metadata: pb.OpMetadata

    @property
    def kind(self) -> str:
        """``exec``, ``source``, ``file``, ``merge``, ``diff``, ``build``... or ``terminal``."""
        return self.op.WhichOneof("op") or "terminal"


@dataclass(frozen=True)
class LoadedDefinition:
    """A verified definition: vertices in definition order, the terminal last."""

    source: str
    vertices: tuple[Vertex, ...]
    by_digest: Mapping[str, Vertex]
    source_info: pb.Source

    @property
    def terminal(self) -> Vertex:
        """The last op, which only names the result."""
        return self.vertices[-1]

    @property
    def result(self) -> pb.Input:
        """The (digest, output index) the definition asks for."""
        return self.terminal.op.inputs[0]


def output_count(op: pb.Op) -> int:
    """How many outputs an op has (what an ``Input.index`` may refer to)."""
    kind = op.WhichOneof("op")
    if kind in _SINGLE_OUTPUT:
        return 1
    if kind == "exec":
        return len({m.output for m in op.exec.mounts if m.mountType == pb.BIND and m.output >= 0})
    if kind == "file":
        return len({a.output for a in op.file.actions if a.output >= 0})
    if kind == "passthrough":
        return len(op.passthrough.outputs)
    return 0


class _Checker:
    """Checks one op's indexes; raises with the op's position and digest in the message."""

    def __init__(self, source: str, vertex: Vertex, total: int) -> None:
        self.where = f"{source}: op {vertex.position + 1} of {total} ({short(vertex.digest)})"
        self.op = vertex.op
        self.inputs = len(vertex.op.inputs)

    def fail(self, problem: str) -> DefinitionError:
        return DefinitionError(f"{self.where}: {problem}")

    def input_index(self, field: str, value: int, *, scratch: bool = True) -> None:
        if (value == -1 and scratch) or 0 <= value < self.inputs:
            return
        allowed = f"-1 (scratch) or 0..{self.inputs - 1}" if scratch else f"0..{self.inputs - 1}"
        if self.inputs == 0:
            allowed = "-1 (scratch); the op has no inputs" if scratch else "nothing; no inputs"
        raise self.fail(f"{field} is {value}, expected {allowed}")

    def outputs(self, field: str, values: Sequence[int]) -> None:
        numbered = [v for v in values if v >= 0]
        if sorted(numbered) != list(range(len(numbered))) or any(v < -1 for v in values):
            raise self.fail(f"{field} numbers {values} are not 0..n-1 once each (-1 for none)")

    def check(self) -> None:
        kind = self.op.WhichOneof("op")
        getattr(self, f"_{kind}", lambda: None)()

    def _exec(self) -> None:
        exec_op = self.op.exec
        if not exec_op.HasField("meta") or not exec_op.meta.args:
            raise self.fail("exec has no command (meta.args is empty)")
        binds = []
        for i, mount in enumerate(exec_op.mounts):
            if mount.mountType == pb.BIND:
                self.input_index(f"mounts[{i}].input", mount.input)
                binds.append(mount.output)
            elif mount.mountType == pb.CACHE:
                self.input_index(f"mounts[{i}].input", mount.input)
            if not mount.dest:
                raise self.fail(f"mounts[{i}] has no dest")
        if not any(m.dest == "/" for m in exec_op.mounts):
            raise self.fail('exec has no root mount (dest "/")')
        self.outputs("mounts[].output", binds)

    def _file(self) -> None:
        actions = self.op.file.actions
        if not actions:
            raise self.fail("file op has no actions")
        for i, action in enumerate(actions):
            for field in ("input", "secondaryInput"):
                value = getattr(action, field)
                if value == -1 or 0 <= value < self.inputs + i:
                    continue
                raise self.fail(
                    f"actions[{i}].{field} is {value}, expected -1, an op input "
                    f"(0..{self.inputs - 1}) or an earlier action "
                    f"({self.inputs}..{self.inputs + i - 1})"
                )
            if action.WhichOneof("action") is None:
                raise self.fail(f"actions[{i}] has no action (copy, mkfile, mkdir, rm...)")
            kind = action.WhichOneof("action")
            owner = getattr(getattr(action, kind), "owner", None)
            if owner is not None:
                for part in ("user", "group"):
                    user_opt = getattr(owner, part)
                    if user_opt.WhichOneof("user") == "byName":
                        self.input_index(
                            f"actions[{i}].owner.{part}.byName.input", user_opt.byName.input
                        )
        self.outputs("actions[].output", [a.output for a in actions])

    def _merge(self) -> None:
        if not self.op.merge.inputs:
            raise self.fail("merge has no inputs")
        for i, item in enumerate(self.op.merge.inputs):
            self.input_index(f"merge.inputs[{i}].input", item.input, scratch=False)

    def _diff(self) -> None:
        self.input_index("diff.lower.input", self.op.diff.lower.input)
        self.input_index("diff.upper.input", self.op.diff.upper.input)

    def _build(self) -> None:
        self.input_index("build.builder", self.op.build.builder, scratch=False)
        for name, item in sorted(self.op.build.inputs.items()):
            self.input_index(f"build.inputs[{name!r}].input", item.input, scratch=False)

    def _source(self) -> None:
        identifier = self.op.source.identifier
        if "://" not in identifier:
            raise self.fail(
                f"source identifier {identifier!r} has no scheme (e.g. docker-image://)"
            )


def _named(digest: str) -> str:
    """A digest read from the input, as a message can show it: on one line, never long."""
    if not digest:
        return "<empty>"
    return digest if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else repr(digest[:80])


def _parse_definition(data: bytes, source: str) -> pb.Definition:
    if not data:
        raise DefinitionError(f"{source}: not an LLB definition: the input is empty")
    definition = pb.Definition()
    try:
        definition.ParseFromString(data)
    except DecodeError as err:
        reason = str(err) or "bytes are not a pb.Definition"
        raise DefinitionError(f"{source}: not an LLB definition: {reason}") from None
    ops = getattr(definition, "def")
    if len(ops) < 2:
        raise DefinitionError(
            f"{source}: not an LLB definition: it has {len(ops)} op(s); a definition needs at "
            "least one op and the terminal op naming the result"
        )
    return definition


def _parse_ops(definition: pb.Definition, source: str) -> list[Vertex]:
    raw_ops = list(getattr(definition, "def"))
    total = len(raw_ops)
    vertices: list[Vertex] = []
    seen: dict[str, int] = {}
    for position, data in enumerate(raw_ops):
        digest = digest_of(data)
        op = pb.Op()
        try:
            op.ParseFromString(data)
        except DecodeError as err:
            raise DefinitionError(
                f"{source}: op {position + 1} of {total} ({short(digest)}) does not parse: {err}"
            ) from None
        if digest in seen:
            raise DefinitionError(
                f"{source}: op {position + 1} of {total} is a duplicate of op {seen[digest] + 1} "
                f"({short(digest)})"
            )
        seen[digest] = position
        metadata = definition.metadata[digest] if digest in definition.metadata else pb.OpMetadata()
        vertices.append(Vertex(position, digest, op, data, metadata))
    return vertices


def _check_graph(vertices: list[Vertex], source: str) -> None:
    total = len(vertices)
    by_digest = {v.digest: v for v in vertices}
    terminal = vertices[-1]
    if terminal.kind != "terminal" or len(terminal.op.inputs) != 1:
        raise DefinitionError(
            f"{source}: the last op ({short(terminal.digest)}) must be the terminal op: no op "
            f"body and exactly one input (it is {terminal.kind!r} with "
            f"{len(terminal.op.inputs)} inputs)"
        )
    for vertex in vertices[:-1]:
        checker = _Checker(source, vertex, total)
        if vertex.kind == "terminal":
            raise checker.fail("has no op body (exec, source, file...); only the last op may")
        for i, item in enumerate(vertex.op.inputs):
            target = by_digest.get(item.digest)
            if target is None:
                raise checker.fail(
                    f"inputs[{i}] refers to {_named(item.digest)}, which is not in the definition"
                )
            if target is terminal:
                raise checker.fail(f"inputs[{i}] refers to the terminal op")
            count = output_count(target.op)
            if not 0 <= item.index < count:
                raise checker.fail(
                    f"inputs[{i}] asks for output {item.index} of {short(item.digest)}, "
                    f"which has {count}"
                )
        checker.check()
    result = terminal.op.inputs[0]
    target = by_digest.get(result.digest)
    if target is None or target is terminal:
        raise DefinitionError(
            f"{source}: the terminal op refers to {_named(result.digest)}, which is not in "
            "the definition"
        )
    if not 0 <= result.index < output_count(target.op):
        raise DefinitionError(
            f"{source}: the terminal op asks for output {result.index} of {short(result.digest)}, "
            f"which has {output_count(target.op)}"
        )
    reachable = {terminal.digest}
    stack = [terminal]
    while stack:
        for item in stack.pop().op.inputs:
            if item.digest not in reachable:
                reachable.add(item.digest)
                stack.append(by_digest[item.digest])
    for vertex in vertices:
        if vertex.digest not in reachable:
            raise DefinitionError(
                f"{source}: op {vertex.position + 1} of {total} ({short(vertex.digest)}) is not "
                "used by the result (a dangling op)"
            )


def is_empty_definition(data: bytes) -> bool:
    """Whether ``data`` is a definition without ops: what ``scratch`` marshals to, which a
    frontend returns for a stage that adds no filesystem change (``FROM scratch`` with only
    LABELs). BuildKit solves it to an empty result; :func:`load_definition` refuses it."""
    definition = pb.Definition()
    try:
        definition.ParseFromString(data)
    except DecodeError:  # not a definition at all: load_definition says why
        return False
    return bool(data) and not getattr(definition, "def")


def load_definition(data: bytes, *, source: str = "<stdin>") -> LoadedDefinition:
    """Parse and verify a marshaled ``pb.Definition``.

    :param source: where the bytes came from, for messages (a file name, ``<stdin>``).
    :raises DefinitionError: one line naming the source, the op and what is wrong.
    """
    definition = _parse_definition(data, source)
    vertices = _parse_ops(definition, source)
    _check_graph(vertices, source)
    return LoadedDefinition(
        source=source,
        vertices=tuple(vertices),
        by_digest={v.digest: v for v in vertices},
        source_info=definition.Source,
    )


def ignore_cache(data: bytes, source: str = "<stdin>") -> bytes:
    """The definition with every op marked ``ignore_cache`` in its metadata, as buildctl's
    ``--no-cache`` marks LLB it sends (op bytes, and so digests, are unchanged)."""
    from llbkit.core.llb.marshal import marshal

    definition = _parse_definition(data, source)
    for op in getattr(definition, "def"):  # a Python keyword as field name
        definition.metadata[digest_of(op)].ignore_cache = True
    return marshal(definition)
