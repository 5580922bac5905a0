"""Marshal protobuf messages to exactly the bytes BuildKit's Go code produces.

BuildKit hashes marshaled ops, so a byte of difference is a different vertex. Go's stable
marshaler writes fields in number order, skips proto3 zero scalars, packs repeated numbers, sorts
map entries by key and always writes both key and value of an entry. upb's deterministic mode
agrees except for map keys where one is a prefix of another, so we encode ourselves.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

# upb's descriptors and the pure-Python ones share no static type.
_FieldDesc = Any
_MessageDesc = Any

__all__ = ["marshal"]

_F = FieldDescriptor
_VARINT_TYPES = frozenset(
    {_F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_BOOL, _F.TYPE_ENUM}
)
_ZIGZAG_TYPES = frozenset({_F.TYPE_SINT32, _F.TYPE_SINT64})
_FIXED32 = {_F.TYPE_FIXED32: "<I", _F.TYPE_SFIXED32: "<i", _F.TYPE_FLOAT: "<f"}
_FIXED64 = {_F.TYPE_FIXED64: "<Q", _F.TYPE_SFIXED64: "<q", _F.TYPE_DOUBLE: "<d"}


def _varint(value: int, out: bytearray) -> None:
    value &= 0xFFFFFFFFFFFFFFFF  # negative numbers are ten-byte two's complement, as in Go
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _scalar_writer(field: _FieldDesc) -> tuple[int, Callable[[Any, bytearray], None]]:
    """The wire type and a function appending one value's payload (no tag)."""
    kind = field.type
    if kind in _VARINT_TYPES:
        return 0, _varint
    if kind in _ZIGZAG_TYPES:
        return 0, lambda v, out: _varint((v << 1) ^ (v >> 63), out)
    if kind in _FIXED32:
        fmt = _FIXED32[kind]
        return 5, lambda v, out: out.extend(struct.pack(fmt, v))
    if kind in _FIXED64:
        fmt = _FIXED64[kind]
        return 1, lambda v, out: out.extend(struct.pack(fmt, v))
    if kind == _F.TYPE_STRING:
        return 2, lambda v, out: _bytes(v.encode(), out)
    if kind == _F.TYPE_BYTES:
        return 2, _bytes
    if kind == _F.TYPE_MESSAGE:
        return 2, lambda v, out: _bytes(marshal(v), out)
    raise TypeError(f"unsupported field type {kind} of {field.full_name}")


def _bytes(data: bytes, out: bytearray) -> None:
    _varint(len(data), out)
    out.extend(data)


@dataclass(frozen=True)
class _Field:
    name: str
    number: int
    tag: bytes
    wire: int
    write: Callable[[Any, bytearray], None]
    repeated: bool
    packed: bool
    presence: bool
    map_entry: tuple[_Field, _Field] | None


def _tag(number: int, wire: int) -> bytes:
    out = bytearray()
    _varint(number << 3 | wire, out)
    return bytes(out)


def _compile(field: _FieldDesc, is_map: bool = False) -> _Field:
    wire, write = _scalar_writer(field)
    repeated = field.is_repeated
    entry = None
    if is_map:
        entry_fields = field.message_type.fields_by_number
        entry = (_compile(entry_fields[1]), _compile(entry_fields[2]))
    packed = repeated and wire in (0, 1, 5)
    tag = _tag(field.number, 2 if packed else wire)
    return _Field(
        field.name, field.number, tag, wire, write, repeated, packed, field.has_presence, entry
    )


_PLANS: dict[_MessageDesc, tuple[_Field, ...]] = {}


def _plan(msg: Message) -> tuple[_Field, ...]:
    descriptor: _MessageDesc = msg.DESCRIPTOR
    plan = _PLANS.get(descriptor)
    if plan is None:
        # A map field's value is a mapping; asking the descriptor's options instead would load
        # descriptor_pb2, a third of a cold start.
        fields: list[_FieldDesc] = sorted(descriptor.fields, key=lambda f: f.number)
        plan = tuple(_compile(f, isinstance(getattr(msg, f.name), Mapping)) for f in fields)
        _PLANS[descriptor] = plan
    return plan


def _unknown(msg: Message, out: bytearray) -> None:
    for item in UnknownFieldSet(msg):  # type: ignore[attr-defined]
        wire = item.wire_type
        out.extend(_tag(item.field_number, wire))
        if wire == 0:
            _varint(item.data, out)
        elif wire == 1:
            out.extend(struct.pack("<Q", item.data))
        elif wire == 5:
            out.extend(struct.pack("<I", item.data))
        elif wire == 2:
            _bytes(item.data, out)
        else:
            raise ValueError(f"cannot re-marshal unknown group field {item.field_number}")


def marshal(msg: Message) -> bytes:
    """Encode ``msg`` as Go's gogo stable marshaler (and BuildKit's master) would."""
    out = bytearray()
    for f in _plan(msg):
        value = getattr(msg, f.name)
        if f.map_entry is not None:
            key_field, value_field = f.map_entry
            for key in sorted(value):
                entry = bytearray()
                entry.extend(key_field.tag)
                key_field.write(key, entry)
                entry.extend(value_field.tag)
                value_field.write(value[key], entry)
                out.extend(f.tag)
                _bytes(bytes(entry), out)
        elif f.repeated:
            if not value:
                continue
            if f.packed:
                payload = bytearray()
                for item in value:
                    f.write(item, payload)
                out.extend(f.tag)
                _bytes(bytes(payload), out)
            else:
                for item in value:
                    out.extend(f.tag)
                    f.write(item, out)
        elif f.presence:
            if msg.HasField(f.name):
                out.extend(f.tag)
                f.write(value, out)
        elif value:
            out.extend(f.tag)
            f.write(value, out)
    _unknown(msg, out)
    return bytes(out)
