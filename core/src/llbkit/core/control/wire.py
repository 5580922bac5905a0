"""The Controller's typed records to and from ``control.proto``'s messages, both ways, so the
daemon's service and the remote client only translate."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Literal

from llbkit.core.api._pb import control_pb2, worker_pb2
from llbkit.core.control.request import (
    CacheOptionsEntry,
    ExporterRequest,
    PruneRequest,
    SolveRequest,
    SolveResponse,
)
from llbkit.core.errors import UserError
from llbkit.core.llb._pb import ops_pb2
from llbkit.core.plugins.progress import (
    ProgressEvent,
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from llbkit.core.cache.usage import UsageRecord
    from llbkit.core.control.controller import (
        BuildHistoryRecord,
        HistoryEvent,
        Info,
        WorkerRecord,
    )
    from llbkit.core.plugins.context import ClientIO

__all__ = [
    "history_event_from_pb",
    "history_event_to_pb",
    "history_from_pb",
    "history_to_pb",
    "info_from_pb",
    "info_to_pb",
    "prune_from_pb",
    "prune_to_pb",
    "solve_request_from_pb",
    "solve_request_to_pb",
    "status_from_pb",
    "status_to_pb",
    "usage_from_pb",
    "usage_to_pb",
    "worker_to_pb",
]

#: what BuildKit's oldest cache fields mean (v0.4 replaced them with Exports/Imports)
_REGISTRY = "registry"


def _set_time(field: Timestamp, seconds: float | None) -> None:
    if seconds is not None:
        # Whole seconds apart: a float of today's time in nanoseconds is off by up to 128.
        whole = math.floor(seconds)
        field.seconds, field.nanos = divmod(whole * 10**9 + round((seconds - whole) * 1e9), 10**9)


def _time(message: Any, name: str) -> float | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.seconds + stamp.nanos / 1e9


# -- Solve ----------------------------------------------------------------------------------


def solve_request_to_pb(request: SolveRequest, session_id: str) -> control_pb2.SolveRequest:
    """``request`` as a client sends it; several exporters travel in ``Exporters`` (BuildKit
    v0.13's field) with the first also in the v0.11 fields, for older daemons."""
    pb = control_pb2.SolveRequest(
        Ref=request.ref,
        Session=session_id,
        Frontend=request.frontend,
        FrontendAttrs=dict(request.frontend_attrs),
        Entitlements=list(request.entitlements),
    )
    if request.definition is not None:
        from llbkit.core.llb.definition import load_definition

        load_definition(request.definition, source=request.source)  # one line if it is not
        pb.Definition.ParseFromString(request.definition)
    for name, data in request.frontend_inputs.items():
        pb.FrontendInputs[name].ParseFromString(data)
    for exporter in request.exporters:
        pb.Exporters.add(Type=exporter.type, Attrs=dict(exporter.attrs))
    if len(request.exporters) == 1:
        pb.Exporter = request.exporters[0].type
        pb.ExporterAttrs.update(request.exporters[0].attrs)
    for entry in request.cache_exports:
        pb.Cache.Exports.add(Type=entry.type, Attrs=dict(entry.attrs))
    for entry in request.cache_imports:
        pb.Cache.Imports.add(Type=entry.type, Attrs=dict(entry.attrs))
    return pb


def solve_request_from_pb(pb: control_pb2.SolveRequest, session: ClientIO) -> SolveRequest:
    """A client's request, typed; BuildKit's deprecated forms read as BuildKit reads them."""
    # (the stubs' SolveRequest.Exporter, a string, hides the Exporter message's type)
    listed: list[control_pb2.Exporter] = list(pb.Exporters)
    if listed:
        exporters = [ExporterRequest(e.Type, dict(e.Attrs)) for e in listed]
    elif pb.Exporter:
        exporters = [ExporterRequest(pb.Exporter, dict(pb.ExporterAttrs))]
    else:
        exporters = []
    exports = [CacheOptionsEntry(e.Type, dict(e.Attrs)) for e in pb.Cache.Exports]
    imports = [CacheOptionsEntry(e.Type, dict(e.Attrs)) for e in pb.Cache.Imports]
    if pb.Cache.ExportRefDeprecated:
        attrs = {**pb.Cache.ExportAttrsDeprecated, "ref": pb.Cache.ExportRefDeprecated}
        exports.append(CacheOptionsEntry(_REGISTRY, attrs))
    imports += [CacheOptionsEntry(_REGISTRY, {"ref": r}) for r in pb.Cache.ImportRefsDeprecated]
    seen = set()
    for entry in exports:
        key = (entry.type, json.dumps(dict(entry.attrs), sort_keys=True))
        if key in seen:  # as BuildKit's controller refuses them
            raise UserError(f"duplicate cache exports {entry.type} {dict(entry.attrs)}")
        seen.add(key)
    # An empty definition is none at all, as BuildKit reads it.
    ops = getattr(pb.Definition, "def")  # a Python keyword as a field name
    definition = pb.Definition.SerializeToString() if ops else None
    return SolveRequest(
        ref=pb.Ref,
        session=session,
        definition=definition,
        frontend=pb.Frontend,
        frontend_attrs=dict(pb.FrontendAttrs),
        frontend_inputs={k: v.SerializeToString() for k, v in pb.FrontendInputs.items()},
        exporters=exporters,
        cache_exports=exports,
        cache_imports=imports,
        entitlements=list(pb.Entitlements),
    )


def solve_response_to_pb(response: SolveResponse) -> control_pb2.SolveResponse:
    return control_pb2.SolveResponse(ExporterResponse=dict(response.exporter_response))


def solve_response_from_pb(ref: str, pb: control_pb2.SolveResponse) -> SolveResponse:
    return SolveResponse(ref, dict(pb.ExporterResponse), (dict(pb.ExporterResponse),))


# -- Status ---------------------------------------------------------------------------------


_KIND_ORDER = {Vertex: 0, VertexStatus: 1, VertexLog: 2, VertexWarning: 3}


def status_to_pb(status: SolveStatus) -> list[control_pb2.StatusResponse]:
    """One batch of records as messages a client reads in the order they happened: a client
    reads a message's vertexes, then statuses, logs and warnings, so a record of an earlier
    kind after a later one starts the next message."""
    messages = [control_pb2.StatusResponse()]
    last = 0
    for event in status.events():
        kind = _KIND_ORDER[type(event)]
        if kind < last:
            messages.append(control_pb2.StatusResponse())
        last = kind
        _add_event(messages[-1], event)
    return messages


def _add_event(pb: control_pb2.StatusResponse, event: ProgressEvent) -> None:
    if isinstance(event, Vertex):
        v = pb.vertexes.add(
            digest=event.digest,
            inputs=list(event.inputs),
            name=event.name,
            cached=event.cached,
            error=event.error,
        )
        _set_time(v.started, event.started)
        _set_time(v.completed, event.completed)
        if event.progress_group:
            v.progressGroup.CopyFrom(ops_pb2.ProgressGroup(id=event.progress_group))
    elif isinstance(event, VertexStatus):
        s = pb.statuses.add(
            ID=event.id,
            vertex=event.vertex,
            name=event.name,
            current=event.current,
            total=event.total,
        )
        _set_time(s.timestamp, event.timestamp)
        _set_time(s.started, event.started)
        _set_time(s.completed, event.completed)
    elif isinstance(event, VertexLog):
        log = pb.logs.add(vertex=event.vertex, stream=event.stream, msg=event.data)
        _set_time(log.timestamp, event.timestamp)
    else:
        pb.warnings.add(
            vertex=event.vertex,
            level=event.level,
            short=event.short.encode(),
            detail=[line.encode() for line in event.detail],
            url=event.url,
        )


def status_from_pb(pb: control_pb2.StatusResponse) -> SolveStatus:
    """The records of one batch, vertexes first, as BuildKit's clients read a batch."""
    events: list[ProgressEvent] = []
    for v in pb.vertexes:
        events.append(
            Vertex(
                v.digest,
                v.name,
                tuple(v.inputs),
                v.cached,
                _time(v, "started"),
                _time(v, "completed"),
                v.error,
                v.progressGroup.id if v.HasField("progressGroup") else "",
            )
        )
    for s in pb.statuses:
        events.append(
            VertexStatus(
                s.ID,
                s.vertex,
                _time(s, "timestamp") or 0.0,
                s.name,
                s.current,
                s.total,
                _time(s, "started"),
                _time(s, "completed"),
            )
        )
    for log in pb.logs:
        events.append(VertexLog(log.vertex, _time(log, "timestamp") or 0.0, log.stream, log.msg))
    for w in pb.warnings:
        events.append(
            VertexWarning(
                w.vertex,
                0.0,
                w.short.decode(errors="replace"),
                w.level,
                tuple(d.decode(errors="replace") for d in w.detail),
                w.url,
            )
        )
    return SolveStatus.of(events)


# -- the store ------------------------------------------------------------------------------


def usage_to_pb(record: UsageRecord) -> control_pb2.UsageRecord:
    pb = control_pb2.UsageRecord(
        ID=record.id,
        Mutable=record.mutable,
        InUse=record.in_use,
        Size=record.size,
        UsageCount=record.usage_count,
        Description=record.description,
        RecordType=record.record_type,
        Shared=record.shared,
        Parents=list(record.parents),
    )
    if record.parents:
        pb.Parent = record.parents[0]
    _set_time(pb.CreatedAt, record.created)
    _set_time(pb.LastUsedAt, record.last_used)
    return pb


def usage_from_pb(pb: control_pb2.UsageRecord) -> UsageRecord:
    from llbkit.core.cache.usage import UsageRecord

    parents = tuple(pb.Parents) or ((pb.Parent,) if pb.Parent else ())
    return UsageRecord(
        id=pb.ID,
        parents=parents,
        size=pb.Size,
        created=_time(pb, "CreatedAt") or 0.0,
        last_used=_time(pb, "LastUsedAt"),
        usage_count=pb.UsageCount,
        description=pb.Description,
        record_type=pb.RecordType,
        mutable=pb.Mutable,
        in_use=pb.InUse,
        shared=pb.Shared,
    )


def prune_to_pb(request: PruneRequest) -> control_pb2.PruneRequest:
    return control_pb2.PruneRequest(
        filter=list(request.filters),
        all=request.all,
        keepDuration=round(request.keep_duration * 1e9),
        keepBytes=request.keep_bytes,
    )


def prune_from_pb(pb: control_pb2.PruneRequest) -> PruneRequest:
    return PruneRequest(
        filters=tuple(pb.filter),
        all=pb.all,
        keep_duration=pb.keepDuration / 1e9,
        keep_bytes=pb.keepBytes,
    )


# -- workers, info, history -----------------------------------------------------------------


def worker_to_pb(worker: WorkerRecord, info: Info) -> worker_pb2.WorkerRecord:
    pb = worker_pb2.WorkerRecord(ID=worker.id, Labels=dict(worker.labels))
    for platform in worker.platforms:
        pb.platforms.add(
            OS=platform.os, Architecture=platform.architecture, Variant=platform.variant
        )
    for rule in worker.gc_policy:
        pb.GCPolicy.add(
            all=rule.all,
            keepDuration=round(rule.keep_duration * 1e9),
            keepBytes=rule.keep_bytes,
            filters=list(rule.filters),
        )
    pb.BuildkitVersion.CopyFrom(_version(info))
    return pb


def _version(info: Info) -> worker_pb2.BuildkitVersion:
    return worker_pb2.BuildkitVersion(
        package=info.package, version=info.version, revision=info.revision
    )


def worker_from_pb(pb: worker_pb2.WorkerRecord) -> WorkerRecord:
    from llbkit.core.config import GCRule
    from llbkit.core.control.controller import WorkerRecord
    from llbkit.core.plugins.context import Platform

    return WorkerRecord(
        id=pb.ID,
        platforms=[Platform(p.OS, p.Architecture, p.Variant) for p in pb.platforms],
        labels=dict(pb.Labels),
        gc_policy=[
            GCRule(
                all=rule.all,
                keep_bytes=rule.keepBytes,
                keep_duration=rule.keepDuration / 1e9,
                filters=tuple(rule.filters),
            )
            for rule in pb.GCPolicy
        ],
    )


def info_from_pb(pb: control_pb2.InfoResponse) -> Info:
    from llbkit.core.control.controller import Info

    version = pb.buildkitVersion
    return Info(version.package, version.version, version.revision)


def info_to_pb(info: Info) -> control_pb2.InfoResponse:
    return control_pb2.InfoResponse(buildkitVersion=_version(info))


def history_to_pb(record: BuildHistoryRecord) -> control_pb2.BuildHistoryRecord:
    pb = control_pb2.BuildHistoryRecord(
        Ref=record.ref,
        Frontend=record.frontend,
        FrontendAttrs=dict(record.frontend_attrs),
        ExporterResponse=dict(record.exporter_response),
        numCachedSteps=record.num_cached_steps,
        numTotalSteps=record.num_total_steps,
        numCompletedSteps=record.num_completed_steps,
        pinned=record.pinned,
    )
    for exporter in record.exporters:
        pb.Exporters.add(Type=str(exporter.get("type", "")), Attrs=exporter.get("attrs") or {})
    if record.error:
        pb.error.CopyFrom(control_pb2.Status(code=2, message=record.error))  # UNKNOWN
    _set_time(pb.CreatedAt, record.created_at)
    _set_time(pb.CompletedAt, record.completed_at)
    return pb


def history_from_pb(pb: control_pb2.BuildHistoryRecord) -> BuildHistoryRecord:
    from llbkit.core.control.controller import BuildHistoryRecord

    listed: list[control_pb2.Exporter] = list(pb.Exporters)
    return BuildHistoryRecord(
        ref=pb.Ref,
        frontend=pb.Frontend,
        frontend_attrs=dict(pb.FrontendAttrs),
        exporters=[{"type": e.Type, "attrs": dict(e.Attrs)} for e in listed],
        created_at=_time(pb, "CreatedAt") or 0.0,
        completed_at=_time(pb, "CompletedAt"),
        error=pb.error.message if pb.HasField("error") else "",
        exporter_response=dict(pb.ExporterResponse),
        num_total_steps=pb.numTotalSteps,
        num_cached_steps=pb.numCachedSteps,
        num_completed_steps=pb.numCompletedSteps,
        pinned=pb.pinned,
    )


_EVENT_KINDS: dict[control_pb2.BuildHistoryEventType, Literal["started", "complete", "deleted"]] = {
    control_pb2.STARTED: "started",
    control_pb2.COMPLETE: "complete",
    control_pb2.DELETED: "deleted",
}
_EVENT_TYPES = {kind: number for number, kind in _EVENT_KINDS.items()}


def history_event_to_pb(event: HistoryEvent) -> control_pb2.BuildHistoryEvent:
    return control_pb2.BuildHistoryEvent(
        type=_EVENT_TYPES[event.type], record=history_to_pb(event.record)
    )


def history_event_from_pb(pb: control_pb2.BuildHistoryEvent) -> HistoryEvent:
    from llbkit.core.control.controller import HistoryEvent

    kind = _EVENT_KINDS.get(pb.type)
    if kind is None:
        raise UserError(f"a build history event of unknown type {pb.type}")
    return HistoryEvent(kind, history_from_pb(pb.record))
