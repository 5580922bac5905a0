"""Protocol Buffers' wire format, the little of it the light client needs, and the session's
byte stream (``BytesMessage``) for both ends.

The protobuf runtime costs ~60 ms to import; these few functions cost almost nothing. For a
megabyte of a session's stream the runtime also takes 1 ms (two copies), these 0.04. Encoders
write what the runtime writes for proto3 (defaults left out, fields in number order, map
entries by sorted key, key and value always written, as Go and upb write them); the decoder
reads what any protobuf writer may send and raises :class:`ProtoError` on anything malformed.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import costs more than this module's
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "ProtoError",
    "VARINT",
    "FIXED64",
    "LEN",
    "FIXED32",
    "varint",
    "key",
    "field_varint",
    "field_bytes",
    "field_str",
    "field_message",
    "field_map",
    "fields",
    "decode_map_entry",
    "text",
    "int64",
    "int32",
    "bytes_message",
    "bytes_message_data",
    "last_bytes",
]

#: wire types (groups, 3 and 4, are not proto3's)
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5

_MASK64 = (1 << 64) - 1
_SMALL = [bytes((n,)) for n in range(128)]  # most tags and lengths: no loop, no allocation


class ProtoError(ValueError):
    """Bytes that are not a well-formed protobuf message: the one error a reader catches, as
    the runtime's ``DecodeError``, whatever went wrong inside."""


# -- writing --------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint; a negative number as its 64-bit two's complement (10
    bytes), as protobuf writes a negative int32 or int64."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        if n < -(1 << 63):
            raise ProtoError(f"{n} does not fit in 64 bits")
        n &= _MASK64
    elif n > _MASK64:
        raise ProtoError(f"{n} does not fit in 64 bits")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(field: int, wiretype: int) -> bytes:
    """A field's tag: its number and how its value is written."""
    return varint(field << 3 | wiretype)


def field_varint(field: int, n: int) -> bytes:
    """An integer, bool or enum field; nothing for 0, proto3's default."""
    if not n:
        return b""
    return varint(field << 3) + varint(n)


def field_bytes(field: int, data: bytes) -> bytes:
    """A ``bytes`` field; nothing for ``b""``, proto3's default."""
    if not data:
        return b""
    return varint(field << 3 | LEN) + varint(len(data)) + data


def field_str(field: int, s: str) -> bytes:
    """A ``string`` field, UTF-8; nothing for ``""``, proto3's default."""
    if not s:
        return b""
    return field_bytes(field, s.encode())


def field_message(field: int, data: bytes) -> bytes:
    """A message field set to an encoded message, or one element of a repeated field: written
    even when empty, as the runtime writes a present submessage or a repeated ``""``."""
    return varint(field << 3 | LEN) + varint(len(data)) + data


def field_map(field: int, mapping: Mapping[str, str] | Mapping[str, bytes]) -> bytes:
    """A ``map<string, string>`` or ``map<string, bytes>``: one entry message (key 1, value 2)
    per item, by sorted key so that equal maps encode to equal bytes."""
    out = []
    for name in sorted(mapping):
        value = mapping[name]
        data = value.encode() if isinstance(value, str) else value
        out.append(field_message(field, field_message(1, name.encode()) + field_message(2, data)))
    return b"".join(out)


# -- reading --------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (bits past 64 dropped, as upb does)."""
    end = len(data)
    if pos >= end:
        raise ProtoError("truncated message: a varint is cut short")
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    result = byte & 0x7F
    shift = 7
    while True:
        if pos >= end:
            raise ProtoError("truncated message: a varint is cut short")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("malformed message: a varint longer than 10 bytes")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Each field of an encoded message in order: (number, wire type, value), the value an
    int for varint and fixed-size fields and bytes for length-delimited ones.

    A field may repeat: for a scalar the last value holds, a message's occurrences merge
    (concatenated, they decode as the merged message), as protobuf reads them.
    """
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        number = tag >> 3
        wire = tag & 7
        if number == 0 or tag > 0xFFFFFFFF:
            raise ProtoError(f"malformed message: field number {number}")
        value: int | bytes
        if wire == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == LEN:
            size, pos = _read_varint(data, pos)
            stop = pos + size
            if stop > end:
                raise ProtoError(f"truncated message: field {number} needs {size} bytes")
            value = data[pos:stop]
            pos = stop
        elif wire in (FIXED64, FIXED32):
            stop = pos + (8 if wire == FIXED64 else 4)
            if stop > end:
                raise ProtoError(f"truncated message: field {number} is cut short")
            value = int.from_bytes(data[pos:stop], "little")
            pos = stop
        else:
            raise ProtoError(f"malformed message: wire type {wire} (field {number})")
        yield number, wire, value


def text(data: bytes) -> str:
    """A ``string`` field's value; invalid UTF-8 is refused, as the runtime refuses it."""
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise ProtoError(f"malformed message: a string that is not UTF-8 ({err})") from None


def decode_map_entry(data: bytes) -> tuple[str, str]:
    """One entry of a ``map<string, string>``: (key, value), each ``""`` when left out; other
    fields are skipped, as Go and the spec read an entry (upb drops such an entry)."""
    name = value = b""
    for number, _, field in fields(data):
        if isinstance(field, bytes):
            if number == 1:
                name = field
            elif number == 2:
                value = field
    return text(name), text(value)


def int64(v: int) -> int:
    """A varint read as a signed ``int64``."""
    return v - (1 << 64) if v >= 1 << 63 else v


def int32(v: int) -> int:
    """A varint read as a signed ``int32`` (an enum, a Timestamp's nanos): its low 32 bits."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


# -- BytesMessage: one chunk of a byte stream (Control.Session, FileSend) -------------------


def bytes_message(data: bytes) -> bytes:
    """A ``BytesMessage`` carrying ``data``."""
    return field_bytes(1, data)


def bytes_message_data(msg: bytes) -> bytes:
    """A ``BytesMessage``'s chunk."""
    return last_bytes(msg, 1)


def last_bytes(msg: bytes, number: int) -> bytes:
    """Field ``number``'s bytes (or string's), ``b""`` when absent; the last occurrence, as
    protobuf reads a repeated scalar."""
    found = b""
    for field, _, value in fields(msg):
        if field == number and isinstance(value, bytes):
            found = value
    return found
