"""HPACK (RFC 7541), HTTP/2's header compression, for the lite gRPC client.

The encoder is the simplest conforming one: every field is a literal without indexing with a new
name and no Huffman coding, so it keeps no state and never changes the peer's dynamic table. The
decoder is complete, because a server may use everything the RFC allows.

Decoded names are ASCII (HTTP/2 names are lowercase tokens; anything else is an error). Decoded
values are latin-1: a lossless mapping of octets to characters, so no value is ever rejected and
``value.encode("latin-1")`` gives back the exact octets (gRPC's ``-bin`` values are base64 and
``grpc-message`` is percent-encoded, so in practice values are ASCII), and a field's length in
characters is then the octet count the table's size accounting uses. ``encode`` sends values as
UTF-8, so a non-ASCII value comes back as ``value.encode().decode("latin-1")``.

Only cheap standard modules may be imported here: the client must start in a few milliseconds.
"""

from __future__ import annotations

__all__ = ["Decoder", "HpackError", "encode"]


class HpackError(Exception):
    """A header block breaks RFC 7541; HTTP/2 makes that a COMPRESSION_ERROR of the connection."""


def encode(headers: list[tuple[str, str]]) -> bytes:
    """A header block: each field as a literal without indexing (new name), no Huffman.

    Names must be ASCII (``UnicodeEncodeError`` otherwise) and lowercase, as HTTP/2 requires;
    they are sent as given.
    """
    out = bytearray()
    for name, value in headers:
        out.append(0x00)
        _put_string(out, name.encode("ascii"))
        _put_string(out, value.encode())
    return bytes(out)


def _put_string(out: bytearray, data: bytes) -> None:
    _put_int(out, len(data), 7)
    out += data


def _put_int(out: bytearray, value: int, prefix: int) -> None:
    """RFC 7541 5.1; the first octet's bits above the prefix are left zero for the caller."""
    limit = (1 << prefix) - 1
    if value < limit:
        out.append(value)
        return
    out.append(limit)
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


class Decoder:
    """One direction of a connection: the dynamic table carries over from one block to the next.

    After an ``HpackError`` the table is in an unknown state; HTTP/2 ends the connection anyway.
    """

    def __init__(self, max_table_size: int = 4096) -> None:
        #: the bound we advertised (SETTINGS_HEADER_TABLE_SIZE); the peer may choose less
        self.max_table_size = max_table_size
        self._capacity = max_table_size
        self._entries: list[tuple[str, str]] = []  # oldest first: eviction pops from the front
        self._size = 0

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The fields of one complete header block (HEADERS and its CONTINUATIONs joined)."""
        headers: list[tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            first = block[pos]
            if first & 0x80:  # indexed field
                index, pos = _get_int(block, pos, 7)
                headers.append(self._field(index))
            elif first & 0x40:  # literal with incremental indexing
                name, value, pos = self._literal(block, pos, 6)
                self._add(name, value)
                headers.append((name, value))
            elif first & 0x20:  # dynamic table size update
                if headers:
                    raise HpackError("a dynamic table size update after a header field (RFC 4.2)")
                size, pos = _get_int(block, pos, 5)
                if size > self.max_table_size:
                    raise HpackError(
                        f"table size {size} is above the maximum {self.max_table_size}"
                    )
                self._capacity = size
                self._evict()
            else:  # literal without indexing (0000) or never indexed (0001): not ours to store
                name, value, pos = self._literal(block, pos, 4)
                headers.append((name, value))
        return headers

    def _field(self, index: int) -> tuple[str, str]:
        if 0 < index <= len(_STATIC_NAMES):
            return _STATIC_NAMES[index - 1], _STATIC_VALUES[index - 1] if index <= len(
                _STATIC_VALUES
            ) else ""
        newest = index - len(_STATIC_NAMES)  # 1 is the newest entry
        if 0 < newest <= len(self._entries):
            return self._entries[-newest]
        raise HpackError(f"index {index} is beyond the tables")

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[str, str, int]:
        index, pos = _get_int(block, pos, prefix)
        if index:
            name = self._field(index)[0]
        else:
            raw, pos = _get_string(block, pos)
            try:
                name = raw.decode("ascii")
            except UnicodeDecodeError:
                raise HpackError(f"a header name that is not ASCII: {raw!r}") from None
        raw, pos = _get_string(block, pos)
        return name, raw.decode("latin-1"), pos

    def _add(self, name: str, value: str) -> None:
        """RFC 4.4: a field larger than the whole table empties it and is not stored."""
        self._entries.append((name, value))
        self._size += 32 + len(name) + len(value)
        self._evict()

    def _evict(self) -> None:
        while self._size > self._capacity:
            name, value = self._entries.pop(0)
            self._size -= 32 + len(name) + len(value)


def _get_int(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 5.1; more than 5 continuation octets (above 2**35) is refused, not computed."""
    if pos >= len(block):
        raise HpackError("the block ends where an integer should start")
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    for shift in range(0, 35, 7):
        if pos >= len(block):
            raise HpackError("the block ends inside an integer")
        octet = block[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if not octet & 0x80:
            return value, pos
    raise HpackError("an integer of more than 5 continuation octets")


def _get_string(block: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(block):
        raise HpackError("the block ends where a string should start")
    huffman = block[pos] & 0x80
    length, pos = _get_int(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise HpackError(f"a string of {length} octets runs past the end of the block")
    raw = block[pos:end]
    return (_huffman_decode(raw) if huffman else raw), end


# RFC 7541 Appendix A: indexes 1..61; only the first 16 entries have values.
# fmt: off
_STATIC_NAMES = (
    ":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme",
    ":status", ":status", ":status", ":status", ":status", ":status", ":status",
    "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "accept",
    "access-control-allow-origin", "age", "allow", "authorization", "cache-control",
    "content-disposition", "content-encoding", "content-language", "content-length",
    "content-location", "content-range", "content-type", "cookie", "date", "etag", "expect",
    "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range",
    "if-unmodified-since", "last-modified", "link", "location", "max-forwards",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after",
    "server", "set-cookie", "strict-transport-security", "transfer-encoding", "user-agent",
    "vary", "via", "www-authenticate",
)
_STATIC_VALUES = (
    "", "GET", "POST", "/", "/index.html", "http", "https",
    "200", "204", "206", "304", "400", "404", "500", "", "gzip, deflate",
)
# fmt: on

# RFC 7541 Appendix B, as the bit length of each symbol's code (256 is EOS). The code is
# canonical (codes ascend with length, then symbol), so the lengths alone determine it.
# fmt: off
_CODE_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 0x10
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6,  # 0x20 ' '
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10,  # 0x30 '0'
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  # 0x40 '@'
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6,  # 0x50 'P'
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,  # 0x60 '`'
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28,  # 0x70 'p'
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 0xf0
    30,                                                              # EOS
)
# fmt: on
_EOS = 256
_WIDTH = 30  # the longest code

#: built at the first Huffman-coded string: most of a gRPC client's start never needs it
_huffman: tuple[list[tuple[int, int, int]], list[int]] | None = None


def _huffman_tables() -> tuple[list[tuple[int, int, int]], list[int]]:
    """The symbols in code order, and per code length: (limit, length, offset).

    Read as ``_WIDTH``-bit numbers (codes left-aligned), the codes of one length form a range
    that ends below ``limit``, and ranges ascend with length: the first limit above a window of
    the next ``_WIDTH`` bits gives the code's length, and ``offset`` plus the code its symbol.
    """
    global _huffman  # noqa: PLW0603 - a cache, filled once
    if _huffman is None:
        order = sorted(range(len(_CODE_LENGTHS)), key=lambda s: (_CODE_LENGTHS[s], s))
        ranges = []
        code = start = 0
        for length in range(1, _WIDTH + 1):
            code <<= 1  # the first code of this length follows the last of the shorter ones
            count = _CODE_LENGTHS.count(length)
            if count:
                ranges.append(((code + count) << (_WIDTH - length), length, start - code))
            code += count
            start += count
        _huffman = ranges, order
    return _huffman


def _huffman_decode(data: bytes) -> bytes:
    """RFC 7541 5.2: a symbol at a time; the end must be 0..7 one-bits (EOS's prefix)."""
    ranges, order = _huffman_tables()
    out = bytearray()
    bits = nbits = i = 0  # ``bits`` holds the ``nbits`` input bits not yet decoded
    while True:
        while nbits < _WIDTH and i < len(data):
            bits = bits << 8 | data[i]
            nbits += 8
            i += 1
        if not nbits:
            return bytes(out)
        if nbits >= _WIDTH:
            window = bits >> (nbits - _WIDTH)
        else:  # past the end read as ones: the padding, if valid, then decodes as EOS
            pad = _WIDTH - nbits
            window = bits << pad | ((1 << pad) - 1)
        for limit, length, offset in ranges:  # noqa: B007 - the row found is used below
            if window < limit:
                break
        if length > nbits:
            if nbits > 7 or bits != (1 << nbits) - 1:
                raise HpackError("a Huffman-coded string ends with more than padding")
            return bytes(out)
        symbol = order[offset + (window >> (_WIDTH - length))]
        if symbol == _EOS:
            raise HpackError("EOS inside a Huffman-coded string")
        out.append(symbol)
        nbits -= length
        bits &= (1 << nbits) - 1
