"""The JSON lines ``buildctl debug dump-llb`` prints, reproduced exactly.

buildctl encodes BuildKit's gogo-generated Go structs with ``encoding/json``: field names from
the proto names, ``omitempty`` on most fields, oneofs under the Go field name (``"Op"``,
``"Action"``, ``"User"``), enums as numbers, bytes as base64, HTML-safe string escaping. The
table below lists the fields v0.11.6 encodes *without* ``omitempty``; everything else omits
zero values.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor

from llbkit.core.llb._pb import ops_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from llbkit.core.llb.definition import LoadedDefinition

# upb's descriptors and the pure-Python ones share no static type.
_FieldDesc = Any
_MessageDesc = Any

__all__ = ["dump_lines", "go_json"]

_ALWAYS = {
    "pb.Input": {"digest", "index"},
    "pb.Mount": {"input", "output"},
    "pb.BuildOp": {"builder"},
    "pb.BuildInput": {"input"},
    "pb.OpMetadata": {"caps"},
    "pb.Range": {"start", "end"},
    "pb.Definition": {"metadata"},
    "pb.FileAction": {"input", "secondaryInput", "output"},
    "pb.NamedUserOpt": {"input"},
    "pb.MergeInput": {"input"},
    "pb.LowerDiffInput": {"input"},
    "pb.UpperDiffInput": {"input"},
}
#: Go embeds a non-pointer struct for these: present even when unset.
_VALUE_STRUCTS = {("pb.Range", "start"), ("pb.Range", "end")}

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _scalar(field: _FieldDesc, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return '"' + base64.b64encode(value).decode() + '"'
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return go_json(value)
    return str(int(value))


def _field(msg: Message, field: _FieldDesc) -> str | None:
    """The encoded value, or ``None`` when ``omitempty`` leaves it out."""
    name = msg.DESCRIPTOR.full_name
    keep = field.name in _ALWAYS.get(name, ())
    value = getattr(msg, field.name)
    if isinstance(value, Mapping):
        if not value:
            return "null" if keep else None
        value_field = field.message_type.fields_by_number[2]
        items = [f"{_string(str(k))}:{_scalar(value_field, value[k])}" for k in sorted(value)]
        return "{" + ",".join(items) + "}"
    if field.is_repeated:
        if not value:
            return "null" if keep else None
        return "[" + ",".join(_scalar(field, v) for v in value) + "]"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if (name, field.name) in _VALUE_STRUCTS or msg.HasField(field.name):
            return go_json(value)
        return "null" if keep else None
    if not value and not keep:
        return None
    return _scalar(field, value)


def _oneof_name(name: str) -> str:
    return name[:1].upper() + name[1:]


def _members(descriptor: _MessageDesc) -> Iterator[tuple[str, _FieldDesc | None, str | None]]:
    """Go struct order: fields by number, a oneof where its first member stands."""
    emitted: set[str] = set()
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        oneof = field.containing_oneof
        if oneof is None:
            yield field.name, field, None
        elif oneof.name not in emitted:
            emitted.add(oneof.name)
            yield _oneof_name(oneof.name), None, oneof.name


def go_json(msg: Message) -> str:
    """Encode a ``pb`` message as Go's ``encoding/json`` encodes BuildKit's generated struct."""
    parts = []
    for key, field, oneof in _members(msg.DESCRIPTOR):
        if oneof is not None:
            chosen = msg.WhichOneof(oneof)
            if chosen is None:
                parts.append(f'"{key}":null')
                continue
            member = msg.DESCRIPTOR.fields_by_name[chosen]
            inner = _field_always(msg, member)
            parts.append(f'"{key}":{{{inner}}}')
            continue
        assert field is not None
        encoded = _field(msg, field)
        if encoded is not None:
            parts.append(f"{_string(key)}:{encoded}")
    return "{" + ",".join(parts) + "}"


def _field_always(msg: Message, member: _FieldDesc) -> str:
    """A oneof member inside its Go wrapper struct (itself ``omitempty``)."""
    value = getattr(msg, member.name)
    if member.type == FieldDescriptor.TYPE_MESSAGE:
        return f"{_string(member.name)}:{go_json(value)}"
    if not value:
        return ""
    return f"{_string(member.name)}:{_scalar(member, value)}"


def dump_lines(definition: LoadedDefinition) -> Iterator[str]:
    """One JSON object per op, in definition order, each ending in a newline."""
    for vertex in definition.vertices:
        op_json = go_json(vertex.op)
        meta_json = go_json(vertex.metadata if vertex.metadata is not None else pb.OpMetadata())
        yield f'{{"Op":{op_json},"Digest":{_string(vertex.digest)},"OpMetadata":{meta_json}}}\n'
