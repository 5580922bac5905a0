"""The light client's hand-written protobuf: the same bytes the generated classes write, the
same records ``control.wire`` reads, and a ProtoError (never an IndexError) for bad input."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from llbkit.core.api import protowire as proto
from llbkit.core.api._pb import (
    auth_pb2,
    control_pb2,
    fsutil_pb2,
    health_pb2,
    packets_pb2,
    secrets_pb2,
)
from llbkit.core.api.protowire import ProtoError
from llbkit.core.control import wire
from llbkit.core.control.request import CacheOptionsEntry, ExporterRequest, SolveRequest
from llbkit.core.llb._pb import ops_pb2
from llbkit.core.plugins.progress import (
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)
from llbkit.core.remote.lite import messages

# -- the wire format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n", [0, 1, 127, 128, 300, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1, -1, -2, -(2**63)]
)
def test_varints_are_written_as_the_runtime_writes_them(n: int) -> None:
    if 0 <= n < 2**63:
        pb: Message = fsutil_pb2.Stat(size=n)  # int64, field 5
        assert proto.field_varint(5, n) == pb.SerializeToString()
    if n < 0:
        assert proto.field_varint(5, n) == fsutil_pb2.Stat(size=n).SerializeToString()
        assert len(proto.varint(n)) == 10
    ((number, wire_type, value),) = proto.fields(proto.key(5, 0) + proto.varint(n))
    assert (number, wire_type) == (5, 0)
    assert proto.int64(value) == (n if n < 2**63 else n - 2**64)


def test_out_of_range_integers_are_refused() -> None:
    for n in (2**64, -(2**63) - 1):
        with pytest.raises(ProtoError):
            proto.varint(n)


def test_defaults_are_left_out() -> None:
    assert proto.field_varint(1, 0) == proto.field_str(1, "") == proto.field_bytes(1, b"") == b""
    assert proto.field_map(1, {}) == b""
    assert proto.field_message(1, b"") == b"\x0a\x00"  # a present submessage is written


def test_fields_reads_every_wire_type() -> None:
    data = (
        proto.key(1, 0)
        + proto.varint(2**64 - 1)
        + proto.key(2, 1)
        + (2**64 - 2).to_bytes(8, "little")
        + proto.field_bytes(3, b"abc")
        + proto.key(4, 5)
        + (0xFFFFFFFE).to_bytes(4, "little")
        + proto.key(2**29 - 1, 0)
        + b"\x01"
    )
    assert list(proto.fields(data)) == [
        (1, 0, 2**64 - 1),
        (2, 1, 2**64 - 2),
        (3, 2, b"abc"),
        (4, 5, 0xFFFFFFFE),
        (2**29 - 1, 0, 1),
    ]
    assert proto.int64(2**64 - 1) == -1 and proto.int32(2**64 - 1) == -1
    assert proto.int32(2**31) == -(2**31) and proto.int32(5) == 5


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # a tag without its value
        b"\x08\x80",  # a varint cut short
        b"\x0a\x05abc",  # a length past the end
        b"\x0a",  # a length missing
        b"\x09\x00\x00",  # fixed64 cut short
        b"\x0d\x00",  # fixed32 cut short
        b"\x0b\x0c",  # a group: not proto3's
        b"\x0c",  # a group's end
        b"\x0e\x00",  # wire type 6
        b"\x0f\x00",  # wire type 7
        b"\x00\x01",  # field number 0
        b"\x08" + b"\xff" * 10 + b"\x01",  # an 11-byte varint
        b"\x80\x80\x80\x80\x10\x00",  # a tag past 32 bits
        b"\x80",  # a tag cut short
    ],
)
def test_malformed_input_is_a_proto_error(data: bytes) -> None:
    with pytest.raises(ProtoError):
        list(proto.fields(data))


def test_strings_must_be_utf8() -> None:
    bad = proto.field_bytes(1, b"\xff\xfe")
    with pytest.raises(DecodeError):
        auth_pb2.CredentialsRequest.FromString(bad)
    with pytest.raises(ProtoError):
        messages.credentials_host(bad)
    with pytest.raises(ProtoError):
        proto.decode_map_entry(proto.field_bytes(2, b"\xed\xa0\x80"))  # a lone surrogate
    assert proto.decode_map_entry(b"") == ("", "")


# -- Control --------------------------------------------------------------------------------


def _definition() -> bytes:
    from llbkit.sdk import llb

    state = llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()


Attrs = dict[str, str]

_REQUESTS: list[dict[str, Any]] = [
    {},
    {"frontend": "dockerfile.v0", "frontend_attrs": {"target": "app", "no-cache": ""}},
    {"exporters": [("image", {"name": "r/x:ünï", "push": "true"})]},
    {"exporters": [("", {})]},
    {"exporters": [("local", {})], "frontend_attrs": {}},
    {
        "exporters": [("tar", {"dest": "x"}), ("local", {"dest": "y"}), ("oci", {})],
        "cache_exports": [("registry", {"ref": "r/c", "mode": "max"}), ("inline", {})],
        "cache_imports": [("local", {"src": "d"})],
        "entitlements": ["network.host", "", "security.insecure"],
    },
    {"cache_imports": [("", {})]},
    {"cache_exports": [("gha", {"": "", "ø": "\u2603" * 300})]},
    {"definition": "llb"},
    {"definition": "llb", "exporters": [("local", {"dest": "out"})], "entitlements": ["a"]},
]


@pytest.mark.parametrize("fields", _REQUESTS)
def test_a_solve_request_is_what_wire_makes(fields: dict[str, Any]) -> None:
    definition = _definition() if fields.get("definition") else None
    typed = SolveRequest(
        ref="ref-1",
        session=None,  # type: ignore[arg-type]  # only the id travels
        definition=definition,
        frontend=fields.get("frontend", ""),
        frontend_attrs=fields.get("frontend_attrs", {}),
        exporters=[ExporterRequest(t, a) for t, a in fields.get("exporters", [])],
        cache_exports=[CacheOptionsEntry(t, a) for t, a in fields.get("cache_exports", [])],
        cache_imports=[CacheOptionsEntry(t, a) for t, a in fields.get("cache_imports", [])],
        entitlements=fields.get("entitlements", []),
    )
    expected = wire.solve_request_to_pb(typed, "session-ü")
    data = messages.solve_request(
        "ref-1",
        "session-ü",
        definition=definition,
        frontend=fields.get("frontend", ""),
        frontend_attrs=fields.get("frontend_attrs", {}),
        exporters=fields.get("exporters", []),
        cache_exports=fields.get("cache_exports", []),
        cache_imports=fields.get("cache_imports", []),
        entitlements=fields.get("entitlements", []),
    )
    got = control_pb2.SolveRequest.FromString(data)
    assert got == expected
    for name in ("Definition", "Cache"):  # present exactly when wire sets them
        assert got.HasField(name) == expected.HasField(name)
    assert list(got.Entitlements) == list(expected.Entitlements)
    assert [(e.Type, dict(e.Attrs)) for e in got.Exporters] == [
        (e.Type, dict(e.Attrs)) for e in expected.Exporters
    ]
    # maps by sorted key, as Go's deterministic serialization writes them; upb's puts a key
    # after its extensions ("ab" before "a"), so where there are such keys only the maps agree
    if not _prefixed_keys(fields):
        assert data == expected.SerializeToString(deterministic=True)


def _prefixed_keys(fields: dict[str, Any]) -> bool:
    maps = [fields.get("frontend_attrs", {})]
    for name in ("exporters", "cache_exports", "cache_imports"):
        maps += [attrs for _, attrs in fields.get(name, [])]
    return any(a != b and b.startswith(a) for m in maps for a in m for b in m)


def test_solve_request_defaults() -> None:
    assert messages.solve_request("r", "s") == (
        control_pb2.SolveRequest(Ref="r", Session="s").SerializeToString()
    )


@pytest.mark.parametrize(
    "response", [{}, {"": ""}, {"containerimage.digest": "sha256:ab", "ü": "\u2603", "e": ""}]
)
def test_a_solve_response_reads_as_wire_reads_it(response: Attrs) -> None:
    pb = control_pb2.SolveResponse(ExporterResponse=response)
    assert messages.solve_response(pb.SerializeToString()) == response
    assert messages.solve_response(pb.SerializeToString()) == (
        wire.solve_response_from_pb("r", pb).exporter_response
    )


def test_a_solve_response_as_any_writer_may_write_it() -> None:
    entry = control_pb2.SolveResponse.ExporterResponseEntry
    data = b"".join(
        proto.field_message(1, e)
        for e in (
            proto.field_str(2, "no key"),  # a missing key is ""
            proto.field_str(1, "k"),  # a missing value is ""
            entry(key="k", value="later").SerializeToString(),  # the later entry wins
            proto.field_str(2, "first") + proto.field_str(1, "x") + proto.field_str(2, "v"),
        )
    )
    expected = dict(control_pb2.SolveResponse.FromString(data).ExporterResponse)
    assert messages.solve_response(data) == expected == {"": "no key", "k": "later", "x": "v"}
    # An entry with an unknown field is still an entry, as Go and the spec read it (upb drops
    # it; BuildKit never writes one).
    data = proto.field_message(1, proto.field_varint(3, 7) + proto.field_str(1, "u"))
    assert messages.solve_response(data) == {"u": ""}


@pytest.mark.parametrize("ref", ["", "abc", "ü" * 100])
def test_a_status_request(ref: str) -> None:
    assert messages.status_request(ref) == control_pb2.StatusRequest(Ref=ref).SerializeToString()


@pytest.mark.parametrize("data", [b"", b"\x00", b"x" * 127, b"y" * 128, bytes(range(256)) * 300])
def test_a_bytes_message(data: bytes) -> None:
    encoded = messages.bytes_message(data)
    assert encoded == control_pb2.BytesMessage(data=data).SerializeToString()
    assert messages.bytes_message_data(encoded) == data
    assert messages.bytes_message_data(encoded + proto.field_bytes(1, b"last")) == b"last"


# -- Status ---------------------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _full_status(log_size: int = 100_000) -> control_pb2.StatusResponse:
    pb = control_pb2.StatusResponse()
    pb.vertexes.add(
        digest="sha256:1",
        inputs=["sha256:0", "", "sha256:ü"],
        name="[1/2] RUN echo ☃",
        cached=True,
        started=_ts(1_700_000_000, 123_456_789),
        completed=_ts(1_700_000_001, 999_999_999),
        error="exit code: 1",
        progressGroup=ops_pb2.ProgressGroup(id="g1", name="group", weak=True),
    )
    pb.vertexes.add(digest="sha256:2")  # nothing else set: no times, no group
    v = pb.vertexes.add(digest="sha256:3", started=_ts(0))  # set, to zero: 0.0, not None
    v.progressGroup.SetInParent()  # present, empty: ""
    pb.vertexes.add(digest="sha256:4", started=_ts(-5, 500_000_000), completed=_ts(-1, -1))
    pb.statuses.add(
        ID="pull 1",
        vertex="sha256:1",
        name="downloading",
        current=2**40,
        total=-(2**62),
        timestamp=_ts(1_700_000_000, 1),
        started=_ts(1_699_999_999),
        completed=_ts(1_700_000_002, 5),
    )
    pb.statuses.add(ID="s2")  # timestamp unset: 0.0
    pb.statuses.add(ID="s3", timestamp=_ts(0, 0))
    pb.logs.add(vertex="sha256:1", timestamp=_ts(1_700_000_000, 42), stream=2, msg=b"\xff\x00err\n")
    pb.logs.add(vertex="sha256:1")  # no timestamp, no stream, no data
    pb.logs.add(vertex="", stream=-1, msg=b"x" * log_size)
    w = pb.warnings.add(
        vertex="sha256:1",
        level=1,
        short=b"careful \xff",  # bytes on the wire: undecodable is replaced
        detail=[b"more", b"", b"\xc3"],
        url="https://example.com/ü",
    )
    w.info.filename = "Dockerfile"
    w.ranges.add().start.line = 3
    pb.warnings.add(level=-3)
    return pb


def _statuses() -> list[control_pb2.StatusResponse]:
    only_logs = control_pb2.StatusResponse()
    only_logs.logs.add(vertex="v", msg=b"hi")
    reordered = [
        Vertex("d1", "step", started=1.0),
        VertexStatus("s1", "d1", 1.5, "sending", 1, 2),
        VertexLog("d1", 1.6, 1, b"out\n"),
        VertexStatus("s1", "d1", 1.7, "sending", 2, 2, completed=1.7),
        Vertex("d1", "step", started=1.0, completed=2.0, progress_group="pg"),
        VertexWarning("d1", 0.0, "careful", detail=("more",), url="u"),
    ]
    return [
        control_pb2.StatusResponse(),
        _full_status(),
        only_logs,
        *wire.status_to_pb(SolveStatus.of(reordered)),
    ]


def _assert_same_status(data: bytes) -> SolveStatus:
    expected = wire.status_from_pb(control_pb2.StatusResponse.FromString(data))
    got = messages.status(data)
    assert got == expected
    assert got.order == expected.order
    assert got.events() == expected.events()
    for a, b in zip(got.events(), expected.events(), strict=True):  # None stays None, floats
        assert type(a) is type(b)
        for name in ("started", "completed", "timestamp"):
            assert repr(getattr(a, name, None)) == repr(getattr(b, name, None))
    return got


@pytest.mark.parametrize("index", range(len(_statuses())))
def test_status_reads_as_wire_reads_it(index: int) -> None:
    _assert_same_status(_statuses()[index].SerializeToString())


def test_status_of_the_full_message() -> None:
    got = _assert_same_status(_full_status().SerializeToString())
    assert [v.started for v in got.vertexes] == [1_700_000_000.123456789, None, 0.0, -4.5]
    assert got.vertexes[0].progress_group == "g1" and got.vertexes[2].progress_group == ""
    assert got.statuses[0].total == -(2**62) and got.statuses[1].timestamp == 0.0
    assert got.vertexes[3].completed == -1.000000001  # negative nanos, int32 on the wire
    assert got.warnings[0].short == "careful \ufffd" and got.warnings[1].level == -3
    assert got.logs[2].stream == -1 and len(got.logs[2].data) == 100_000


def test_status_merges_repeated_messages_as_protobuf_does() -> None:
    first = control_pb2.Vertex(digest="a", started=_ts(5), progressGroup=ops_pb2.ProgressGroup())
    second = control_pb2.Vertex(name="n", started=_ts(0, 7), progressGroup={"id": "g"})
    log = control_pb2.VertexLog(timestamp=_ts(3)).SerializeToString()
    log += control_pb2.VertexLog(timestamp=_ts(0, 9), stream=1).SerializeToString()
    data = proto.field_message(1, first.SerializeToString() + second.SerializeToString())
    data += proto.field_message(3, log)
    data += _full_status().SerializeToString()  # two messages concatenated: their lists joined
    data += proto.field_varint(9, 1) + proto.field_bytes(10, b"unknown")  # skipped
    got = _assert_same_status(data)
    assert got.vertexes[0] == Vertex("a", "n", started=5.000000007, progress_group="g")
    assert got.logs[0].timestamp == 3.000000009


def test_status_skips_fields_of_an_unexpected_wire_type() -> None:
    # upb reads a known field with another wire type as an unknown one
    vertex = (
        proto.field_varint(1, 5)  # digest as a varint
        + proto.field_bytes(4, b"\x01")  # cached as bytes
        + proto.key(5, 0)
        + b"\x01"  # started as a varint
        + proto.field_str(3, "name")
    )
    status = proto.field_bytes(4, b"x") + proto.field_varint(1, 1) + proto.key(4, 5) + b"\0" * 4
    data = proto.field_message(1, vertex) + proto.field_message(2, status)
    got = _assert_same_status(data)
    assert got.vertexes == (Vertex("", "name"),)


@pytest.mark.parametrize(
    "data",
    [
        proto.field_message(1, proto.field_bytes(1, b"\xff")),  # a digest not UTF-8
        proto.field_message(1, proto.field_bytes(8, proto.field_bytes(2, b"\xff"))),  # group
        proto.field_message(2, proto.field_bytes(3, b"\xc3")),
        proto.field_message(3, proto.field_bytes(1, b"\xc3")),
        proto.field_message(4, proto.field_bytes(5, b"\xc3")),
        proto.field_message(1, proto.field_bytes(5, b"\x08")),  # a truncated timestamp
        proto.field_message(1, b"\x12\x05ab"),  # a truncated vertex
        _full_status().SerializeToString()[:-3],
    ],
)
def test_a_malformed_status_is_a_proto_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        control_pb2.StatusResponse.FromString(data)
    with pytest.raises(ProtoError):
        messages.status(data)


Decoder = Callable[[bytes], object]


def _runtime(cls: type[Message], convert: Callable[[Any], object]) -> Decoder:
    return lambda data: convert(cls.FromString(data))


def _packet_tuple(pb: fsutil_pb2.Packet) -> object:
    stat = pb.stat.SerializeToString(deterministic=True) if pb.HasField("stat") else None
    return pb.type, pb.ID, pb.data, stat


def _lite_packet(data: bytes) -> object:
    kind, id_, payload, stat = messages.decode_packet(data)
    if stat is not None:  # the stat comes back unread: read it as its user would
        try:
            stat = fsutil_pb2.Stat.FromString(stat).SerializeToString(deterministic=True)
        except DecodeError as err:
            raise ProtoError(str(err)) from None
    return kind, id_, payload, stat


def _encode(number: int, wire_type: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return proto.field_message(number, value)
    size = {0: 0, 1: 8, 5: 4}[wire_type]
    return proto.key(number, wire_type) + (
        value.to_bytes(size, "little") if size else proto.varint(value)
    )


def _rewrite(data: bytes, number: int, keep: Callable[[int, int], bool]) -> bytes:
    """``data`` with the fields ``keep`` refuses removed from each message of field
    ``number``."""
    out = b""
    for n, w, v in proto.fields(data):
        if n == number and isinstance(v, bytes):
            kept = b"".join(_encode(*f) for f in proto.fields(v) if keep(f[0], f[1]))
            out += _encode(n, w, kept)
        else:
            out += _encode(n, w, v)
    return out


# Where the light client knowingly reads otherwise than upb, rewritten away before comparing:
# - a warning's source (6) and ranges (7) go unread, so a bad string deep inside them passes;
# - a map entry with unknown fields is an entry, as Go and the spec read it (upb drops it).
def _no_sources(data: bytes) -> bytes:
    return _rewrite(data, 4, lambda n, w: n not in (6, 7))


def _known_entries(data: bytes) -> bytes:
    return _rewrite(data, 1, lambda n, w: n in (1, 2) and w == 2)


def _lite_packets(data: bytes) -> object:
    return [_lite_packet(p) for p in messages.decode_packets(data)]


def _same(data: bytes) -> bytes:
    return data


_DECODERS: list[tuple[Decoder, Decoder, Callable[[bytes], bytes], bytes]] = [
    (
        messages.status,
        _runtime(control_pb2.StatusResponse, wire.status_from_pb),
        _no_sources,
        _full_status(log_size=3).SerializeToString(),
    ),
    (
        messages.solve_response,
        _runtime(control_pb2.SolveResponse, lambda pb: dict(pb.ExporterResponse)),
        _known_entries,
        control_pb2.SolveResponse(ExporterResponse={"a": "b", "ü": ""}).SerializeToString(),
    ),
    (
        _lite_packet,
        _runtime(fsutil_pb2.Packet, _packet_tuple),
        _same,
        fsutil_pb2.Packet(
            type=2, ID=7, data=b"abc", stat=fsutil_pb2.Stat(path="p", xattrs={"k": b"v"})
        ).SerializeToString(),
    ),
    (
        _lite_packets,
        _runtime(packets_pb2.Packets, lambda pb: [_packet_tuple(p) for p in pb.packets]),
        _same,
        packets_pb2.Packets(
            packets=[{"type": 2, "data": b"x", "stat": {"path": "ü"}}, {}]
        ).SerializeToString(),
    ),
]


@pytest.mark.parametrize("index", range(len(_DECODERS)))
def test_damaged_input_reads_as_the_runtime_reads_it(index: int) -> None:
    """Every prefix and many random changes of a good message: never an error but a
    ProtoError, and whatever reads reads as the runtime reads it."""
    lite, runtime, normalize, good = _DECODERS[index]
    rng = random.Random(index)
    samples = [good[:n] for n in range(len(good))]
    for _ in range(5000):
        damaged = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        samples.append(bytes(damaged))
    refused = 0
    for data in samples:
        try:
            got = lite(data)
        except ProtoError as err:
            try:
                runtime(data)
            except DecodeError:
                continue
            # upb skips a well-formed group; proto3 has none, so a group is refused
            assert "wire type 3" in str(err) or "wire type 4" in str(err), data
            refused += 1
            continue
        assert got == runtime(normalize(data)), data
    assert refused < len(samples) // 20


# -- fsutil ---------------------------------------------------------------------------------


_STATS: list[dict[str, Any]] = [
    {"path": "", "mode": 0},
    {"path": "a", "mode": 0o644, "size": 1},
    {
        "path": "dir/ü/☃.txt",
        "mode": 0x80000000 | 0o755,  # Go's ModeDir: the top bit of a uint32
        "uid": 1000,
        "gid": 2**32 - 1,
        "size": 2**40 + 3,
        "mod_time": 1_700_000_000_123_456_789,
        "linkname": "../target ü",
        "devmajor": 8,
        "devminor": 2**40,
        "xattrs": {"user.a": b"\x00\xff", "security.selinux": b"", "user.ü": b"x" * 300},
    },
    {"path": "old", "mode": 0o600, "mod_time": -1},
    {"path": "older", "mode": 0o600, "mod_time": -(2**62), "xattrs": {}},
]


@pytest.mark.parametrize("fields", _STATS)
def test_a_stat_is_what_the_runtime_writes(fields: dict[str, Any]) -> None:
    pb = fsutil_pb2.Stat(
        path=fields["path"],
        mode=fields["mode"],
        uid=fields.get("uid", 0),
        gid=fields.get("gid", 0),
        size=fields.get("size", 0),
        modTime=fields.get("mod_time", 0),
        linkname=fields.get("linkname", ""),
        devmajor=fields.get("devmajor", 0),
        devminor=fields.get("devminor", 0),
        xattrs=fields.get("xattrs", {}),
    )
    data = messages.stat(**fields)
    assert fsutil_pb2.Stat.FromString(data) == pb
    assert data == pb.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    "kind",
    [
        messages.PACKET_STAT,
        messages.PACKET_REQ,
        messages.PACKET_DATA,
        messages.PACKET_FIN,
        messages.PACKET_ERR,
    ],
)
@pytest.mark.parametrize(
    "stat_fields", [None, {"path": "", "mode": 0}, {"path": "f", "mode": 0o644, "size": 9}]
)
@pytest.mark.parametrize("id_", [0, 1, 2**32 - 1])
@pytest.mark.parametrize("data", [b"", b"\x00", b"z" * 32 * 1024])
def test_a_packet_is_what_the_runtime_writes(
    kind: int, stat_fields: dict[str, Any] | None, id_: int, data: bytes
) -> None:
    stat = None if stat_fields is None else messages.stat(**stat_fields)
    pb = fsutil_pb2.Packet(type=kind, ID=id_, data=data)  # type: ignore[arg-type]
    if stat is not None:
        pb.stat.ParseFromString(stat)
    encoded = messages.packet(kind, stat, id_, data)
    assert encoded == pb.SerializeToString()
    assert messages.decode_packet(encoded) == (kind, id_, data, stat)


def test_the_end_of_a_file_list() -> None:
    # Go's fsutil ends the list with Packet{Type: STAT} and no stat: no bytes at all
    assert messages.packet(messages.PACKET_STAT) == b"" == fsutil_pb2.Packet().SerializeToString()
    assert messages.decode_packet(b"") == (messages.PACKET_STAT, 0, b"", None)
    # a present but empty stat is another thing, as in the runtime
    assert messages.packet(messages.PACKET_STAT, b"") == b"\x12\x00"
    assert messages.decode_packet(b"\x12\x00") == (0, 0, b"", b"")


def test_a_packet_as_any_writer_may_write_it() -> None:
    data = (
        fsutil_pb2.Packet(stat={"path": "a", "mode": 1}, data=b"first").SerializeToString()
        + fsutil_pb2.Packet(type=2, stat={"uid": 3}, data=b"last").SerializeToString()
        + proto.field_varint(1, 2**64 - 1)  # an enum out of range: int32, as the runtime reads
        + proto.field_varint(3, 2**33 + 5)  # a uint32 past 32 bits: its low 32
    )
    pb = fsutil_pb2.Packet.FromString(data)
    kind, id_, payload, stat = messages.decode_packet(data)
    assert (kind, id_, payload) == (pb.type, pb.ID, pb.data) == (-1, 5, b"last")
    assert stat is not None and fsutil_pb2.Stat.FromString(stat) == pb.stat  # merged
    assert pb.stat == fsutil_pb2.Stat(path="a", mode=1, uid=3)


@pytest.mark.parametrize("count", [0, 1, 3, 200])
def test_packets_are_what_the_runtime_writes(count: int) -> None:
    listed = [
        messages.packet(messages.PACKET_DATA, id=i, data=b"d" * i) if i % 3 else b""
        for i in range(count)
    ]
    pb = packets_pb2.Packets(packets=[fsutil_pb2.Packet.FromString(p) for p in listed])
    encoded = messages.packets(listed)
    assert encoded == pb.SerializeToString()
    assert messages.decode_packets(encoded) == listed
    assert messages.decode_packets(encoded + proto.field_varint(2, 1)) == listed


# -- Auth, Health, Secrets ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "tok", "ü-secret"])
def test_secret_request(name: str) -> None:
    request = secrets_pb2.GetSecretRequest(ID=name, annotations={"a": "b"}).SerializeToString()
    assert messages.secret_id(request) == name


@pytest.mark.parametrize("host", ["", "registry-1.docker.io", "ü.example:5000"])
def test_credentials(host: str) -> None:
    request = auth_pb2.CredentialsRequest(Host=host).SerializeToString()
    assert messages.credentials_host(request) == host
    for username, secret in [("", ""), ("user", ""), ("", "tok"), ("ü", "s" * 1000)]:
        assert messages.credentials_response(username, secret) == (
            auth_pb2.CredentialsResponse(Username=username, Secret=secret).SerializeToString()
        )


def test_health() -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert messages.health_serving() == (
        health_pb2.HealthCheckResponse(status=serving).SerializeToString()
    )


# -- what importing costs ---------------------------------------------------------------------


def test_importing_the_messages_imports_nothing_costly() -> None:
    costly = ["typing", "re", "dataclasses", "google.protobuf", "llbkit.core.plugins.progress"]
    script = (
        "import sys, llbkit.core.remote.lite.messages\n"
        f"print([m for m in {costly!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
