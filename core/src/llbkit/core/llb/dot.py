"""``dump-llb --dot``: the definition as a Graphviz graph, as buildctl draws it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llbkit.core.llb._pb import ops_pb2 as pb
    from llbkit.core.llb.definition import LoadedDefinition, Vertex

__all__ = ["dot_lines", "go_quote"]

_SHAPES = {
    "source": "ellipse",
    "exec": "box",
    "build": "box3d",
    "merge": "invtriangle",
    "diff": "doublecircle",
    "file": "note",
}
_CONTROL = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Quote like Go's ``%q``: printable characters kept, the rest escaped."""
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _CONTROL:
            out.append(_CONTROL[char])
        elif char.isprintable() or (char == " "):
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _action_label(action: pb.FileAction) -> str:
    kind = action.WhichOneof("action")
    if kind == "copy":
        return f"copy{{src={action.copy.src}, dest={action.copy.dest}}}"
    if kind in ("mkfile", "mkdir", "rm"):
        return f"{kind}{{path={getattr(action, kind).path}}}"
    if kind == "symlink":
        return f"symlink{{oldpath={action.symlink.oldpath}, newpath={action.symlink.newpath}}}"
    return ""


def _label(vertex: Vertex) -> tuple[str, str]:
    op = vertex.op
    kind = vertex.kind
    if kind == "source":
        return op.source.identifier, _SHAPES[kind]
    if kind == "exec":
        return " ".join(op.exec.meta.args), _SHAPES[kind]
    if kind == "file":
        return ",".join(_action_label(a) for a in op.file.actions), _SHAPES[kind]
    if kind in _SHAPES:
        return kind, _SHAPES[kind]
    return vertex.digest, "plaintext"


def dot_lines(definition: LoadedDefinition) -> Iterator[str]:
    """The lines of the graph, each ending in a newline."""
    yield "digraph {\n"
    for vertex in definition.vertices:
        name, shape = _label(vertex)
        yield f"  {go_quote(vertex.digest)} [label={go_quote(name)} shape={go_quote(shape)}];\n"
    for vertex in definition.vertices:
        for i, item in enumerate(vertex.op.inputs):
            label = ""
            if vertex.kind == "exec":
                for mount in vertex.op.exec.mounts:
                    if mount.input == i and mount.dest != "/":
                        label = mount.dest
            edge = f"{go_quote(item.digest)} -> {go_quote(vertex.digest)}"
            yield f"  {edge} [label={go_quote(label)}];\n"
    yield "}\n"
