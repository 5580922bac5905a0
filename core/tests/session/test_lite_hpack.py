"""The lite client's HPACK codec against RFC 7541's Appendix C examples, and its errors."""

from __future__ import annotations

import pytest

from llbkit.core.remote.lite import hpack
from llbkit.core.remote.lite.hpack import Decoder, HpackError, encode


def block(text: str) -> bytes:
    """An example's octets as the RFC prints them: hex, grouped and wrapped freely."""
    return bytes.fromhex("".join(text.split()))


def table(decoder: Decoder) -> tuple[list[tuple[str, str]], int]:
    """The dynamic table as the RFC lists it (newest first) and its size in octets."""
    return decoder._entries[::-1], decoder._size


def test_c2_literal_forms() -> None:
    """C.2.1-C.2.4: each representation on its own, and only incremental indexing stores."""
    decoder = Decoder()
    assert decoder.decode(
        block("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
    ) == [("custom-key", "custom-header")]
    assert table(decoder) == ([("custom-key", "custom-header")], 55)

    decoder = Decoder()
    assert decoder.decode(block("040c 2f73 616d 706c 652f 7061 7468")) == [
        (":path", "/sample/path")
    ]
    assert table(decoder) == ([], 0)

    decoder = Decoder()
    assert decoder.decode(block("1008 7061 7373 776f 7264 0673 6563 7265 74")) == [
        ("password", "secret")
    ]
    assert table(decoder) == ([], 0)

    decoder = Decoder()
    assert decoder.decode(block("82")) == [(":method", "GET")]
    assert table(decoder) == ([], 0)


REQUESTS = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
]
REQUEST_TABLES = [
    ([(":authority", "www.example.com")], 57),
    ([("cache-control", "no-cache"), (":authority", "www.example.com")], 110),
    (
        [
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        164,
    ),
]


def check_sequence(
    decoder: Decoder,
    blocks: list[str],
    expected: list[list[tuple[str, str]]],
    tables: list[tuple[list[tuple[str, str]], int]],
) -> None:
    """Each block decodes to its list and leaves the table the RFC shows after it."""
    for octets, headers, after in zip(blocks, expected, tables, strict=True):
        assert decoder.decode(block(octets)) == headers
        assert table(decoder) == after


def test_c3_requests_without_huffman() -> None:
    """C.3: three requests on one connection, later ones indexing what earlier ones stored."""
    check_sequence(
        Decoder(),
        [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ],
        REQUESTS,
        REQUEST_TABLES,
    )


def test_c4_requests_with_huffman() -> None:
    """C.4: the same requests with Huffman-coded strings."""
    check_sequence(
        Decoder(),
        [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ],
        REQUESTS,
        REQUEST_TABLES,
    )


RESPONSES = [
    [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
    ],
]
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSE_TABLES = [
    (
        [
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        222,
    ),
    (  # ":status: 302" evicted to make room for ":status: 307"
        [
            (":status", "307"),
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
        ],
        222,
    ),
    ([COOKIE, ("content-encoding", "gzip"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT")], 215),
]


def test_c5_responses_without_huffman() -> None:
    """C.5: responses through a 256-octet table, so that entries are evicted."""
    check_sequence(
        Decoder(max_table_size=256),
        [
            """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
            2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
            6c65 2e63 6f6d""",
            "4803 3330 37c1 c0bf",
            """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
            54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
            5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
            3d31""",
        ],
        RESPONSES,
        RESPONSE_TABLES,
    )


def test_c6_responses_with_huffman() -> None:
    """C.6: the same responses with Huffman-coded strings."""
    check_sequence(
        Decoder(max_table_size=256),
        [
            """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
            2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
            "4883 640e ffc1 c0bf",
            """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
            77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
            9587 3160 65c0 03ed 4ee5 b106 3d50 07""",
        ],
        RESPONSES,
        RESPONSE_TABLES,
    )


def test_encode_round_trip() -> None:
    """Literals without indexing: the table stays empty; values come back as latin-1 of UTF-8."""
    headers = [
        (":method", "POST"),
        (":path", "/moby.buildkit.v1.Control/Status"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-message", "ä€ déjà"),
        ("x-long", "v" * 300),  # lengths past the 7-bit prefix
        ("x-empty", ""),
    ]
    decoder = Decoder()
    decoded = decoder.decode(encode(headers))
    assert decoded == [(name, value.encode().decode("latin-1")) for name, value in headers]
    assert decoded[4][1].encode("latin-1").decode() == "ä€ déjà"
    assert table(decoder) == ([], 0)
    assert encode([]) == b""


def test_size_update() -> None:
    """A smaller size evicts at once; the maximum itself is allowed, more is not."""
    decoder = Decoder(max_table_size=256)
    decoder.decode(block("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    assert decoder.decode(block("20")) == []  # size 0: the table empties
    assert table(decoder) == ([], 0)
    assert decoder.decode(block("3fe1 01 82")) == [(":method", "GET")]  # 31 + 225 = 256
    with pytest.raises(HpackError, match="above the maximum"):
        decoder.decode(block("3fe2 01"))  # 257
    with pytest.raises(HpackError, match="after a header field"):
        Decoder().decode(block("82 20"))


def test_field_larger_than_table() -> None:
    """RFC 4.4: a field that cannot fit empties the table and is not stored."""
    decoder = Decoder(max_table_size=40)
    assert decoder.decode(block("4001 6101 62")) == [("a", "b")]
    assert table(decoder) == ([("a", "b")], 34)
    assert decoder.decode(block("4001 6109 3132 3334 3536 3738 39")) == [("a", "123456789")]
    assert table(decoder) == ([], 0)


@pytest.mark.parametrize(
    "octets",
    [
        "80",  # index 0
        "be",  # index 62 with an empty dynamic table
        "ff80 8080 8080 01",  # an index far beyond the tables (6 continuation octets)
        "ff",  # an integer truncated after its prefix
        "ff80",  # ...and inside its continuation
        "40",  # a literal with no name string
        "400a 6375 7374",  # a name shorter than its length
        "0001 61",  # a literal with a name and no value
        "0001 6103 6263",  # ...and a value that runs past the end
        "7f00 0161",  # a name by an index beyond the tables
        "0001 ff01 61",  # a name that is not ASCII
    ],
)
def test_malformed_blocks(octets: str) -> None:
    """Indexes beyond the tables and truncated integers or strings are HpackErrors."""
    with pytest.raises(HpackError):
        Decoder().decode(block(octets))


def test_huffman_padding() -> None:
    """Up to 7 one-bits after the last code are padding ('a' is 00011)."""
    assert Decoder().decode(block("0001 61 81 1f")) == [("a", "a")]  # 00011 111
    assert Decoder().decode(block("0001 61 82 18ff")) == [("a", "aa")]  # 00011 00011 111111
    assert Decoder().decode(block("0001 61 80")) == [("a", "")]


@pytest.mark.parametrize(
    "value",
    [
        "81 ff",  # 8 bits of padding
        "82 1fff",  # 'a' then 11 ones
        "81 00",  # 'a' then 000: not ones
        "81 1e",  # 'a' then 110: not ones
        "84 ffff ffff",  # EOS (30 ones) inside the string
        "83 ffff fe",  # a code of more than 24 bits, cut short
    ],
)
def test_bad_huffman(value: str) -> None:
    """Padding longer than 7 bits or not all ones, and EOS in the string, are errors."""
    with pytest.raises(HpackError):
        Decoder().decode(block("0001 61" + value))


def test_huffman_every_octet() -> None:
    """Codes of every length decode: all 256 octets in one string (a value, so latin-1)."""
    # The codes, rebuilt from the lengths by the canonical rule and checked against a few that
    # Appendix B prints, are packed here independently of the decoder's own tables.
    lengths = hpack._CODE_LENGTHS
    codes: dict[int, int] = {}
    code = previous = 0
    for symbol in sorted(range(257), key=lambda s: (lengths[s], s)):
        code <<= lengths[symbol] - previous
        previous = lengths[symbol]
        codes[symbol] = code
        code += 1
    printed = {
        ord("0"): (0x0, 5),
        ord("a"): (0x3, 5),
        ord(" "): (0x14, 6),
        ord("A"): (0x21, 6),
        ord("z"): (0x7B, 7),
        ord("&"): (0xF8, 8),
        ord("\\"): (0x7FFF0, 19),
        0: (0x1FF8, 13),
        10: (0x3FFFFFFC, 30),
        22: (0x3FFFFFFE, 30),
        0xFF: (0x3FFFFEE, 26),
        256: (0x3FFFFFFF, 30),
    }
    assert {symbol: (codes[symbol], lengths[symbol]) for symbol in printed} == printed
    bits = nbits = 0
    for octet in range(256):
        bits = bits << lengths[octet] | codes[octet]
        nbits += lengths[octet]
    pad = -nbits % 8
    packed = (bits << pad | ((1 << pad) - 1)).to_bytes((nbits + pad) // 8, "big")
    rest = len(packed) - 127  # the length: 7-bit prefix full, then two continuation octets
    assert 128 <= rest < 128**2
    string = bytes([0x80 | 0x7F, 0x80 | rest & 0x7F, rest >> 7]) + packed
    decoded = Decoder().decode(block("0001 61") + string)
    assert decoded == [("a", bytes(range(256)).decode("latin-1"))]
