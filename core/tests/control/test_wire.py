"""The Controller's records to and from control.proto's messages, as the daemon and the remote
client translate them."""

from __future__ import annotations

import pytest

from llbkit.core.api._pb import control_pb2
from llbkit.core.cache.usage import UsageRecord
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.control import wire
from llbkit.core.control.request import (
    CacheOptionsEntry,
    ExporterRequest,
    PruneRequest,
    SolveRequest,
)
from llbkit.core.errors import DefinitionError, UserError
from llbkit.core.llb._pb import ops_pb2
from llbkit.core.plugins.progress import (
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)
from llbkit.sdk import llb

CLIENT = EmbeddedClient()


def _definition() -> bytes:
    state = llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()


def test_a_solve_request_crosses_unchanged() -> None:
    request = SolveRequest(
        ref="r1",
        session=CLIENT,
        definition=_definition(),
        exporters=[ExporterRequest("tar", {"dest": "x"}), ExporterRequest("local", {})],
        cache_exports=[CacheOptionsEntry("registry", {"ref": "r/c", "mode": "max"})],
        cache_imports=[CacheOptionsEntry("local", {"src": "d"})],
        entitlements=["network.host"],
    )
    pb = wire.solve_request_to_pb(request, "session-1")
    assert pb.Session == "session-1" and not pb.Exporter  # several: only the v0.13 field
    back = wire.solve_request_from_pb(
        control_pb2.SolveRequest.FromString(pb.SerializeToString()), CLIENT
    )
    assert back.definition is not None and request.definition is not None
    sent, got = (ops_pb2.Definition.FromString(d) for d in (request.definition, back.definition))
    assert got == sent  # the ops' bytes (what digests are of) exactly; the maps as maps
    assert list(getattr(got, "def")) == list(getattr(sent, "def"))
    assert back.exporters == request.exporters
    assert back.cache_exports == request.cache_exports
    assert back.cache_imports == request.cache_imports
    assert list(back.entitlements) == ["network.host"]


def test_buildkit_v011_forms_are_read_as_buildkit_reads_them() -> None:
    pb = control_pb2.SolveRequest(Ref="r", Exporter="image", ExporterAttrs={"name": "x"})
    pb.Cache.ExportRefDeprecated = "reg/cache"
    pb.Cache.ExportAttrsDeprecated["mode"] = "max"
    pb.Cache.ImportRefsDeprecated.extend(["reg/a", "reg/b"])
    typed = wire.solve_request_from_pb(pb, CLIENT)
    assert typed.exporters == [ExporterRequest("image", {"name": "x"})]
    assert typed.cache_exports == [
        CacheOptionsEntry("registry", {"mode": "max", "ref": "reg/cache"})
    ]
    assert [e.attrs["ref"] for e in typed.cache_imports] == ["reg/a", "reg/b"]
    assert typed.definition is None and not typed.frontend  # the client is the frontend


def test_duplicate_cache_exports_are_refused() -> None:
    pb = control_pb2.SolveRequest(Ref="r")
    for _ in range(2):
        pb.Cache.Exports.add(Type="local", Attrs={"dest": "d"})
    with pytest.raises(UserError, match="duplicate cache exports"):
        wire.solve_request_from_pb(pb, CLIENT)


def test_a_client_never_sends_a_definition_that_does_not_load() -> None:
    request = SolveRequest(ref="r", session=CLIENT, definition=b"\x0a\x05junk", source="<stdin>")
    with pytest.raises(DefinitionError, match="<stdin>"):
        wire.solve_request_to_pb(request, "s")


def test_status_keeps_the_order_records_happened_in() -> None:
    events = [
        Vertex("d1", "step", started=1.0),
        VertexStatus("s1", "d1", 1.5, "sending", 1, 2),
        VertexLog("d1", 1.6, 1, b"out\n"),
        VertexStatus("s1", "d1", 1.7, "sending", 2, 2, completed=1.7),
        Vertex("d1", "step", started=1.0, completed=2.0),
        VertexWarning("d1", 2.1, "careful", detail=("more",), url="u"),
    ]
    messages = wire.status_to_pb(SolveStatus.of(events))
    # vertex, status, log | status | vertex, warning: each message in the order clients read
    assert [
        len(m.vertexes) + len(m.statuses) + len(m.logs) + len(m.warnings) for m in messages
    ] == [3, 1, 2]
    read = [e for m in messages for e in wire.status_from_pb(m).events()]
    assert [type(e) for e in read] == [type(e) for e in events]
    assert read[4] == events[4] and read[2] == events[2]
    assert read[5].short == "careful" and read[5].detail == ("more",)


def test_usage_and_prune_cross_unchanged() -> None:
    record = UsageRecord("id1", ("p",), 42, 1700000000.5, None, 3, "desc", "regular", False, True)
    assert wire.usage_from_pb(wire.usage_to_pb(record)) == record
    prune = PruneRequest(("type==regular",), all=True, keep_duration=3600.0, keep_bytes=9)
    assert wire.prune_from_pb(wire.prune_to_pb(prune)) == prune


def test_history_records_and_events_cross_unchanged() -> None:
    from llbkit.core.control.controller import BuildHistoryRecord, HistoryEvent, Info

    finished = BuildHistoryRecord(
        ref="r1",
        frontend="dockerfile.v0",
        frontend_attrs={"target": "app"},
        exporters=[{"type": "local", "attrs": {"dest": "out"}}],
        created_at=1700000000.25,
        completed_at=1700000003.5,
        error="failed to solve: boom",
        exporter_response={"k": "v"},
        num_total_steps=5,
        num_cached_steps=2,
        num_completed_steps=4,
    )
    running = BuildHistoryRecord("r2", "", {}, [], 1700000001.0)
    assert wire.history_from_pb(wire.history_to_pb(finished)) == finished
    assert wire.history_from_pb(wire.history_to_pb(running)) == running
    for kind, number in (
        ("started", control_pb2.STARTED),
        ("complete", control_pb2.COMPLETE),
        ("deleted", control_pb2.DELETED),
    ):
        event = HistoryEvent(kind, finished)  # type: ignore[arg-type]
        pb = wire.history_event_to_pb(event)
        assert pb.type == number
        assert wire.history_event_from_pb(pb) == event
    with pytest.raises(UserError, match="unknown type 7"):
        wire.history_event_from_pb(control_pb2.BuildHistoryEvent(type=7))  # type: ignore[arg-type]
    info = Info("llbkit", "1.2.3", "abc")
    assert wire.info_from_pb(wire.info_to_pb(info)) == info


def test_an_exports_statuses_say_when_they_started() -> None:
    """buildctl shows a status only once it has a start (BuildKit's progressui)."""
    from llbkit.core.control.stepsink import StepSink

    seen: list[VertexStatus] = []
    sink = StepSink(seen.append, "sha256:" + "e" * 64)  # type: ignore[arg-type]
    sink.status("sending tarball")
    sink.status("sending tarball", done=True)
    assert seen[0].started is not None and seen[1].started == seen[0].started
    pb = wire.status_to_pb(SolveStatus.of(seen))[0]
    assert all(s.HasField("started") for s in pb.statuses)
