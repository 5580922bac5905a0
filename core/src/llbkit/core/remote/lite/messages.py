"""The few protobuf messages the light client sends and reads, written and read by hand.

Each encoder writes the bytes the generated ``*_pb2`` class writes for the same values, and
each decoder reads what ``llbkit.core.control.wire`` reads, so a light client and a full one
look the same to a daemon (``core/tests/session/test_lite_messages.py`` holds them to it).
"""

from __future__ import annotations

from llbkit.core.api.protowire import (
    VARINT,
    bytes_message,
    bytes_message_data,
    decode_map_entry,
    field_bytes,
    field_map,
    field_message,
    field_str,
    field_varint,
    fields,
    int32,
    int64,
    last_bytes,
    text,
)

TYPE_CHECKING = False  # typing's import costs more than this module's
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llbkit.core.plugins.progress import (
        SolveStatus,
        Vertex,
        VertexLog,
        VertexStatus,
        VertexWarning,
    )

__all__ = [
    "solve_request",
    "solve_response",
    "status_request",
    "status",
    "bytes_message",
    "bytes_message_data",
    "PACKET_STAT",
    "PACKET_REQ",
    "PACKET_DATA",
    "PACKET_FIN",
    "PACKET_ERR",
    "secret_response",
    "stat",
    "packet",
    "decode_packet",
    "packets",
    "decode_packets",
    "credentials_host",
    "secret_id",
    "credentials_response",
    "health_serving",
]

_NO_ATTRS: Mapping[str, str] = {}


# -- moby.buildkit.v1.Control ----------------------------------------------------------------


def solve_request(
    ref: str,
    session: str,
    *,
    definition: bytes | None = None,
    frontend: str = "",
    frontend_attrs: Mapping[str, str] = _NO_ATTRS,
    exporters: Sequence[tuple[str, Mapping[str, str]]] = (),
    cache_exports: Sequence[tuple[str, Mapping[str, str]]] = (),
    cache_imports: Sequence[tuple[str, Mapping[str, str]]] = (),
    entitlements: Sequence[str] = (),
) -> bytes:
    """A ``SolveRequest`` as ``wire.solve_request_to_pb`` makes it: every exporter in
    ``Exporters`` (v0.13's field), a single one also in ``Exporter``/``ExporterAttrs`` for
    older daemons; ``definition`` is a marshaled ``pb.Definition``, sent as it is."""
    out = [field_str(1, ref)]
    if definition is not None:
        out.append(field_message(2, definition))
    if len(exporters) == 1:
        out += field_str(3, exporters[0][0]), field_map(4, exporters[0][1])
    out += field_str(5, session), field_str(6, frontend), field_map(7, frontend_attrs)
    if cache_exports or cache_imports:
        cache = [field_message(4, _typed(t, a)) for t, a in cache_exports]
        cache += [field_message(5, _typed(t, a)) for t, a in cache_imports]
        out.append(field_message(8, b"".join(cache)))
    out += [field_message(9, e.encode()) for e in entitlements]
    out += [field_message(13, _typed(t, a)) for t, a in exporters]
    return b"".join(out)


def _typed(type: str, attrs: Mapping[str, str]) -> bytes:
    """An ``Exporter`` or a ``CacheOptionsEntry``: the same two fields."""
    return field_str(1, type) + field_map(2, attrs)


def solve_response(data: bytes) -> dict[str, str]:
    """A ``SolveResponse``'s ``ExporterResponse``."""
    response = {}
    for number, _, value in fields(data):
        if number == 1 and isinstance(value, bytes):
            name, entry = decode_map_entry(value)
            response[name] = entry
    return response


def status_request(ref: str) -> bytes:
    """A ``StatusRequest``: the progress of build ``ref``."""
    return field_str(1, ref)


# -- StatusResponse: SolveStatus, as wire.status_from_pb reads it ------------------------------


def status(data: bytes) -> SolveStatus:
    """A ``StatusResponse``'s records: vertexes first, then statuses, logs and warnings, as
    ``wire.status_from_pb`` reads them (and BuildKit's clients read a batch). A warning's
    source and ranges go unread, so unlike the runtime this does not check the strings deep
    inside them: no reason to stop showing a build."""
    from llbkit.core.plugins.progress import SolveStatus

    vertexes: list[Vertex] = []
    statuses: list[VertexStatus] = []
    logs: list[VertexLog] = []
    warnings: list[VertexWarning] = []
    for number, _, value in fields(data):
        if isinstance(value, bytes):
            if number == 1:
                vertexes.append(_vertex(value))
            elif number == 2:
                statuses.append(_vertex_status(value))
            elif number == 3:
                logs.append(_vertex_log(value))
            elif number == 4:
                warnings.append(_vertex_warning(value))
    return SolveStatus(
        tuple(vertexes),
        tuple(statuses),
        tuple(logs),
        tuple(warnings),
        (*vertexes, *statuses, *logs, *warnings),
    )


def _time(data: bytes | None) -> float | None:
    """A ``google.protobuf.Timestamp`` in seconds as ``wire._time`` reads it; None if unset."""
    if data is None:
        return None
    seconds = nanos = 0
    for number, wire, value in fields(data):
        if wire == VARINT and isinstance(value, int):
            if number == 1:
                seconds = int64(value)
            elif number == 2:
                nanos = int32(value)
    return seconds + nanos / 1e9


def _merge(old: bytes | None, new: bytes) -> bytes:
    """A message field seen again: protobuf merges the two, which their concatenation reads as."""
    return new if old is None else old + new


def _vertex(data: bytes) -> Vertex:
    from llbkit.core.plugins.progress import Vertex

    digest = name = error = ""
    inputs: list[str] = []
    cached = False
    started: bytes | None = None
    completed: bytes | None = None
    group: bytes | None = None
    for number, wire, value in fields(data):
        if isinstance(value, bytes):
            if number == 1:
                digest = text(value)
            elif number == 2:
                inputs.append(text(value))
            elif number == 3:
                name = text(value)
            elif number == 5:
                started = _merge(started, value)
            elif number == 6:
                completed = _merge(completed, value)
            elif number == 7:
                error = text(value)
            elif number == 8:
                group = _merge(group, value)
        elif wire == VARINT and number == 4:
            cached = value != 0
    return Vertex(
        digest,
        name,
        tuple(inputs),
        cached,
        _time(started),
        _time(completed),
        error,
        _group_id(group),
    )


def _group_id(data: bytes | None) -> str:
    """A ``pb.ProgressGroup``'s id; ``""`` when there is none."""
    group_id = ""
    for number, _, value in fields(data or b""):
        if isinstance(value, bytes):
            if number == 1:
                group_id = text(value)
            elif number == 2:
                text(value)  # the name, unused: still refused if not UTF-8, as the runtime does
    return group_id


def _vertex_status(data: bytes) -> VertexStatus:
    from llbkit.core.plugins.progress import VertexStatus

    id_ = vertex = name = ""
    current = total = 0
    timestamp: bytes | None = None
    started: bytes | None = None
    completed: bytes | None = None
    for number, wire, value in fields(data):
        if isinstance(value, bytes):
            if number == 1:
                id_ = text(value)
            elif number == 2:
                vertex = text(value)
            elif number == 3:
                name = text(value)
            elif number == 6:
                timestamp = _merge(timestamp, value)
            elif number == 7:
                started = _merge(started, value)
            elif number == 8:
                completed = _merge(completed, value)
        elif wire == VARINT:
            if number == 4:
                current = int64(value)
            elif number == 5:
                total = int64(value)
    return VertexStatus(
        id_,
        vertex,
        _time(timestamp) or 0.0,
        name,
        current,
        total,
        _time(started),
        _time(completed),
    )


def _vertex_log(data: bytes) -> VertexLog:
    from llbkit.core.plugins.progress import VertexLog

    vertex = ""
    msg = b""
    stream = 0
    timestamp: bytes | None = None
    for number, wire, value in fields(data):
        if isinstance(value, bytes):
            if number == 1:
                vertex = text(value)
            elif number == 2:
                timestamp = _merge(timestamp, value)
            elif number == 4:
                msg = value
        elif wire == VARINT and number == 3:
            stream = int64(value)
    return VertexLog(vertex, _time(timestamp) or 0.0, stream, msg)


def _vertex_warning(data: bytes) -> VertexWarning:
    from llbkit.core.plugins.progress import VertexWarning

    vertex = url = short = ""
    level = 0
    detail: list[str] = []
    for number, wire, value in fields(data):
        if isinstance(value, bytes):
            if number == 1:
                vertex = text(value)
            elif number == 3:
                short = value.decode(errors="replace")  # bytes on the wire
            elif number == 4:
                detail.append(value.decode(errors="replace"))
            elif number == 5:
                url = text(value)
            # 6 (info) and 7 (ranges): wire.status_from_pb does not read them either
        elif wire == VARINT and number == 2:
            level = int64(value)
    # The timestamp is 0.0, as wire.status_from_pb gives it: VertexWarning has none on the wire.
    return VertexWarning(vertex, 0.0, short, level, tuple(detail), url)


# -- fsutil.types: the packets of a DiffCopy --------------------------------------------------

#: ``Packet.PacketType``
PACKET_STAT, PACKET_REQ, PACKET_DATA, PACKET_FIN, PACKET_ERR = 0, 1, 2, 3, 4

_NO_XATTRS: Mapping[str, bytes] = {}


def stat(
    path: str,
    mode: int,
    *,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mod_time: int = 0,
    linkname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: Mapping[str, bytes] = _NO_XATTRS,
) -> bytes:
    """A ``Stat``: ``mode`` in Go's ``os.FileMode`` bits (uint32), ``mod_time`` in nanoseconds
    since the epoch (negative before 1970)."""
    return b"".join(
        (
            field_str(1, path),
            field_varint(2, mode),
            field_varint(3, uid),
            field_varint(4, gid),
            field_varint(5, size),
            field_varint(6, mod_time),
            field_str(7, linkname),
            field_varint(8, devmajor),
            field_varint(9, devminor),
            field_map(10, xattrs),
        )
    )


def packet(type: int, stat: bytes | None = None, id: int = 0, data: bytes = b"") -> bytes:
    """A ``Packet``; ``stat`` (an encoded Stat) is left out when None. The end of a file list
    is a STAT packet without a stat, which encodes to no bytes at all, as Go sends it."""
    head = field_varint(1, type)
    if stat is not None:
        head += field_message(2, stat)
    return b"".join((head, field_varint(3, id), field_bytes(4, data)))


def decode_packet(data: bytes) -> tuple[int, int, bytes, bytes | None]:
    """A ``Packet``: (type, ID, data, the encoded Stat or None when there is none); the stat
    is returned unread, for its user to read (and refuse) if it needs it."""
    type_ = id_ = 0
    payload = b""
    stat_: bytes | None = None
    for number, wire, value in fields(data):
        if isinstance(value, bytes):
            if number == 2:
                stat_ = _merge(stat_, value)
            elif number == 4:
                payload = value
        elif wire == VARINT:
            if number == 1:
                type_ = int32(value)  # an enum: int32, open
            elif number == 3:
                id_ = value & 0xFFFFFFFF  # uint32
    return type_, id_, payload, stat_


def packets(encoded_packets: Sequence[bytes]) -> bytes:
    """llbkit's ``Packets``: several encoded ``Packet`` messages in one, for the batched
    DiffCopy (``packets.proto``)."""
    return b"".join([field_message(1, p) for p in encoded_packets])


def decode_packets(data: bytes) -> list[bytes]:
    """A ``Packets``' encoded ``Packet`` messages, in order."""
    return [v for n, _, v in fields(data) if n == 1 and isinstance(v, bytes)]


# -- moby.filesync.v1.Auth, grpc.health.v1 ----------------------------------------------------


def credentials_host(data: bytes) -> str:
    """A ``CredentialsRequest``'s ``Host``: the registry the daemon asks credentials for."""
    return text(last_bytes(data, 1))


def secret_id(data: bytes) -> str:
    """A ``GetSecretRequest``'s ``ID``: the secret the daemon asks for."""
    return text(last_bytes(data, 1))


def credentials_response(username: str, secret: str) -> bytes:
    """A ``CredentialsResponse``; both empty for anonymous access."""
    return field_str(1, username) + field_str(2, secret)


def health_serving() -> bytes:
    """A ``HealthCheckResponse`` saying SERVING: the daemon keeps a session open only while
    its client answers so."""
    return field_varint(1, 1)


def secret_response(data: bytes) -> bytes:
    """A ``GetSecretResponse``: the secret's bytes."""
    return field_bytes(1, data)
