"""The Controller: the one object every client talks to, the Python shape of BuildKit's
``Control`` service.

The embedded CLI calls it in its own process, a Python program calls it directly, and the
daemon serves it over gRPC: ``solve`` a typed request, read a build's ``status`` as a bounded
stream, ``disk_usage``, ``prune``, ``workers``, ``info``, ``history``. It is also the
composition root of an engine: the plugin registry, the store, the drivers and the solver are
built here once and handed down.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import pluggy
from anyio.streams.memory import MemoryObjectSendStream

from llbkit.core import __version__
from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import UsageRecord, apply_gc, disk_usage, prune
from llbkit.core.config import EngineConfig, GCRule, default_gc_rules
from llbkit.core.control.build import BuildOutcome, Closable, run_build
from llbkit.core.control.request import PruneRequest, SolveRequest, SolveResponse, new_ref
from llbkit.core.control.status import BuildStatus, StatusBoard
from llbkit.core.drivers import Drivers, close_all
from llbkit.core.errors import UserError, one_error
from llbkit.core.plugins import GROUP_WORKERS
from llbkit.core.plugins.context import Platform
from llbkit.core.plugins.hooks import HookCaller
from llbkit.core.plugins.progress import ProgressEvent, SolveStatus, Vertex, VertexWarning
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.core.snapshot.limits import LayerLimits, set_limits
from llbkit.core.solver.cache_sources import CacheChain, LocalCache
from llbkit.core.solver.solver import Solver

if TYPE_CHECKING:
    from llbkit.core.registry.connections import ConnectionPool

__all__ = ["BuildHistoryRecord", "Controller", "HistoryEvent", "Info", "WorkerRecord"]

#: seconds between two looks at which finished builds' records ``[history]`` lets go (BuildKit's
#: daemon looks every 120 s)
HISTORY_GC_INTERVAL = 120.0


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as ``ListWorkers`` describes it."""

    id: str
    platforms: Sequence[Platform]
    labels: dict[str, str]
    gc_policy: Sequence[GCRule]


@dataclass(frozen=True)
class Info:
    """``Info``: what answers."""

    package: str = "llbkit"
    version: str = __version__
    revision: str = ""


@dataclass
class BuildHistoryRecord:
    """A build as ``ListenBuildHistory`` describes it (times in seconds since the epoch)."""

    ref: str
    frontend: str
    frontend_attrs: dict[str, str]
    exporters: list[dict[str, Any]]
    created_at: float
    completed_at: float | None = None
    error: str = ""
    exporter_response: dict[str, str] = field(default_factory=dict)
    num_total_steps: int = 0
    num_cached_steps: int = 0
    num_completed_steps: int = 0
    #: kept whatever ``[history]`` says (``UpdateBuildHistory`` with ``Pinned``)
    pinned: bool = False


@dataclass(frozen=True)
class HistoryEvent:
    """One event of :meth:`Controller.listen_history` (BuildKit's ``BuildHistoryEvent``): a
    build ``started``, is ``complete`` (its record kept), or its record was ``deleted``."""

    type: Literal["started", "complete", "deleted"]
    record: BuildHistoryRecord


class Controller:
    """An engine over one state root; close it (or ``with``) to release the root."""

    def __init__(
        self,
        store: Store,
        config: EngineConfig | None = None,
        registry: PluginRegistry | None = None,
        hooks: pluggy.PluginManager | None = None,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        set_limits(LayerLimits(self.config.max_layer_entries, self.config.max_layer_size))
        self.registry = registry or PluginRegistry.from_env()
        self.hooks = HookCaller(hooks or self.registry.hook_manager())
        self.drivers = Drivers(self.registry, self.config, store.root.path)
        parallelism = self.config.max_parallelism or max(os.cpu_count() or 1, 1) * 2
        self.solver = Solver(store, self.drivers, CacheChain([LocalCache(store)]), parallelism)
        self.history_dir = store.root.path / "history"
        self.board = StatusBoard(self.history_dir)
        self._gc_lock = threading.Lock()
        #: set by a daemon: garbage is collected after a build has answered (as BuildKit
        #: collects it), on a thread of its own, and what goes wrong is told here. Unset (an
        #: embedded engine, whose process may end with the build), a build collects before
        #: it returns.
        self.gc_after_answer: Callable[[BaseException], None] | None = None
        #: set by a daemon: registry connections kept between builds (closed by its owner);
        #: unset, each build's connections close when it ends
        self.connections: ConnectionPool | None = None
        self._gc_thread: threading.Thread | None = None
        self._gc_thread_lock = threading.Lock()
        #: the records of the builds running now, by ref
        self._running: dict[str, BuildHistoryRecord] = {}
        #: every ``listen_history`` reader's stream (events are published on the event loop)
        self._listeners: set[MemoryObjectSendStream[HistoryEvent]] = set()

    @classmethod
    def open(
        cls,
        root: Path | str,
        config: EngineConfig | None = None,
        registry: PluginRegistry | None = None,
        hooks: pluggy.PluginManager | None = None,
        *,
        layer_format: str | None = None,
        wait: Callable[[str], None] | None = None,
    ) -> Controller:
        """Lock and open the state root at ``root``; with ``wait``, a root another process
        owns is waited for (``wait`` is told so once) instead of refused."""
        store = Store.open(Path(root), layer_format=layer_format, wait=wait)
        return cls(store, config, registry, hooks)

    @classmethod
    def open_readonly(
        cls,
        root: Path | str,
        config: EngineConfig | None = None,
        registry: PluginRegistry | None = None,
        hooks: pluggy.PluginManager | None = None,
    ) -> Controller:
        """A Controller that reads ``root`` without owning it (never waits, never writes):
        ``disk_usage`` and finished builds' ``history`` and ``status`` work, the rest is
        refused."""
        return cls(Store.open_readonly(Path(root)), config, registry, hooks)

    def _owner(self, what: str) -> None:
        if self.store.root.readonly:
            raise UserError(
                f"{what} needs the state root {self.store.root.path} itself; this view only reads"
            )

    def close(self, *, checkpoint: bool = True) -> None:
        """Release the root. ``checkpoint=False`` when the process ends right after: its
        database connection is left to the exit (:meth:`~llbkit.core.cache.db.StateDB.close`)."""
        if self._gc_thread is not None:
            self._gc_thread.join()  # a collection under way ends before the store closes
        self.store.close(checkpoint=checkpoint)

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Controller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker's processes, then release the root."""
        await self.drivers.aclose()
        self.close()

    async def stop_worker(self) -> None:
        """Stop the worker (what it still runs or cleans up) within this event loop: a process
        whose builds are over calls it before its loop ends; a later build starts it again."""
        await self.drivers.aclose()

    # -- builds -----------------------------------------------------------------------------

    async def solve(self, request: SolveRequest) -> SolveResponse:
        """Run one build to the end; its results are released when it returns."""
        async with self.build(request, read_after=False) as outcome:
            return SolveResponse(outcome.ref, outcome.exporter_response, outcome.exporter_responses)

    @asynccontextmanager
    async def build(
        self, request: SolveRequest, *, read_after: bool = True
    ) -> AsyncIterator[BuildOutcome]:
        """Run one build and hold its results for the block: read them with
        ``outcome.result.refs[platform].mount()`` (the Python API's way to a result).

        :param read_after: whether the block may read the result's files. When it does not,
            and the build's exporters (if any) take blobs, an image no step reads is left
            unpulled, as BuildKit leaves it."""
        from llbkit.core.registry.connections import shared_connections

        self._owner("a build")
        _check_ref(request.ref)
        # A finished build's journal is its history: never replaced.
        if self.board.taken(request.ref):
            raise UserError(f"a build with ref {request.ref!r} is already running or done")
        status = self.board.open(request.ref)
        status.start()
        lease = self.store.lease(request.ref)
        record = self._started(request)
        counter = _StepCounter()

        def emit(event: ProgressEvent) -> None:
            counter(event)
            status.emit(event)

        jobs: list[Closable] = []
        try:
            with one_error():
                async with anyio.create_task_group() as relay:
                    if self.hooks.has("llbkit_on_progress"):
                        relay.start_soon(self._relay, request.ref, status)
                    try:
                        with lease.bound():
                            try:
                                async with shared_connections(self.connections):
                                    outcome = await run_build(
                                        self, request, lease, emit, jobs, read_after=read_after
                                    )
                            except BaseException as err:
                                # The build's own failure; the caller's block is its business.
                                record.error = (
                                    str(err) if isinstance(err, UserError) else type(err).__name__
                                )
                                raise
                            record.exporter_response.update(outcome.exporter_response)
                            yield outcome
                    finally:
                        try:
                            with anyio.CancelScope(shield=True):
                                await close_all(jobs)
                        finally:
                            lease.release()
                            record.completed_at = time.time()
                            counter.fill(record)
                            status.finish()
        finally:
            self.board.forget(request.ref)
            with anyio.CancelScope(shield=True):
                await self._ended(record)
        if self.gc_after_answer is None:
            await anyio.to_thread.run_sync(self.maybe_gc)
        else:
            self._collect_later(self.gc_after_answer)

    def _collect_later(self, failed: Callable[[BaseException], None]) -> None:
        """Start a collection on its own thread, unless one is under way (it is throttled to
        one per ``gc_interval`` anyway)."""

        def collect() -> None:
            try:
                self.maybe_gc()
            except Exception as err:  # the build it followed has answered: tell, carry on
                failed(err)

        with self._gc_thread_lock:  # not _gc_lock: a collection holds that while it runs
            if self._gc_thread is not None and self._gc_thread.is_alive():
                return
            self._gc_thread = threading.Thread(target=collect, name="llbkit-gc", daemon=True)
            self._gc_thread.start()

    async def _relay(self, ref: str, status: BuildStatus) -> None:
        """Deliver the build's records to ``llbkit_on_progress`` observers, in order."""
        failed: set[str] = set()
        async for events in status.records():
            for event in events:
                for plugin, line in self.hooks.on_progress(ref, event):
                    if plugin not in failed:
                        # Said once per observer and build: the warning reaches observers too.
                        failed.add(plugin)
                        if not status.done:
                            status.emit(VertexWarning("", time.time(), line))

    def status(self, ref: str) -> AsyncIterator[SolveStatus]:
        """Every progress record of build ``ref``, in batches: a running build's as they come,
        a future build's once it starts, a finished build's from its history."""
        _check_ref(ref)
        return self.board.stream(ref)

    # -- history ----------------------------------------------------------------------------

    def _started(self, request: SolveRequest) -> BuildHistoryRecord:
        """Build ``request`` is running: its record, told to ``listen_history`` readers."""
        record = _record(request)
        self._running[request.ref] = record
        self._publish("started", record)
        return record

    async def _ended(self, record: BuildHistoryRecord) -> None:
        """Keep the build's record, then tell ``listen_history`` readers it is complete, then
        let go of the records ``[history]`` no longer keeps."""
        try:
            await anyio.to_thread.run_sync(self._keep_record, record)
        finally:
            self._running.pop(record.ref, None)
            self._publish("complete", record)
        if not self._history_gc_due():
            return
        for old in await anyio.to_thread.run_sync(self._expired_records):
            await anyio.to_thread.run_sync(self._unlink_record, old.ref)
            self._publish("deleted", old)

    def _history_gc_due(self) -> bool:
        """Whether the records are looked over now: at most once per
        :data:`HISTORY_GC_INTERVAL` for the state root (every process that builds in it), as
        BuildKit's daemon does on a timer, and never by reading every record per build."""
        stamp = self.history_dir / ".gc"
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stamp.stat().st_mtime < HISTORY_GC_INTERVAL:
                return False
        with contextlib.suppress(OSError):  # unwritable: only looked over again next time
            stamp.touch()
        return True

    def _expired_records(self, now: float | None = None) -> list[BuildHistoryRecord]:
        """As BuildKit's history GC: unpinned records beyond the newest ``maxEntries`` that
        are also older than ``maxAge``."""
        keep = self.config.history_max_entries
        try:
            if sum(1 for p in os.scandir(self.history_dir) if p.name.endswith(".json")) < keep:
                return []  # too few to read them all
        except FileNotFoundError:
            return []
        records = [r for r in self._finished("") if not r.pinned and r.completed_at is not None]
        if len(records) < keep:
            return []
        records.sort(key=lambda r: r.completed_at or 0.0, reverse=True)
        cutoff = (time.time() if now is None else now) - self.config.history_max_age
        return [r for r in records[keep:] if (r.completed_at or 0.0) < cutoff]

    async def pin_history(self, ref: str, pinned: bool) -> None:
        """``UpdateBuildHistory`` without ``Delete``: keep (or stop keeping) ``ref``'s record
        whatever ``[history]`` says."""
        _check_ref(ref)
        self._owner("pinning a build's record")
        found = await self.history(ref=ref)
        if not found:
            raise UserError(f"no build {ref} in the history")
        record = found[0]
        if record.pinned != pinned:
            record.pinned = pinned
            await anyio.to_thread.run_sync(self._keep_record, record)

    def _keep_record(self, record: BuildHistoryRecord) -> None:
        self.history_dir.mkdir(exist_ok=True)
        path = self.history_dir / f"{record.ref}.json"
        tmp = path.with_name(f".{path.name}")
        tmp.write_text(json.dumps(record.__dict__, sort_keys=True))
        tmp.rename(path)

    def _publish(
        self, kind: Literal["started", "complete", "deleted"], record: BuildHistoryRecord
    ) -> None:
        """Tell every ``listen_history`` reader (a copy: the build goes on changing its own)."""
        if self._listeners:
            event = HistoryEvent(kind, copy.deepcopy(record))
            for listener in list(self._listeners):
                try:
                    listener.send_nowait(event)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._listeners.discard(listener)  # a reader that went away unclosed

    async def history(
        self, *, ref: str = "", active_only: bool = False
    ) -> list[BuildHistoryRecord]:
        """Finished builds (oldest first), or only ``ref``; ``active_only`` lists the builds
        running now instead (their records have no ``completed_at`` yet)."""
        if ref:
            _check_ref(ref)
        if active_only:
            return [copy.deepcopy(r) for r in self._running.values() if not ref or r.ref == ref]
        return await anyio.to_thread.run_sync(self._finished, ref)

    def _finished(self, ref: str) -> list[BuildHistoryRecord]:
        found = []
        paths = [self.history_dir / f"{ref}.json"] if ref else self.history_dir.glob("*.json")
        for path in paths:
            try:
                found.append(BuildHistoryRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, RecursionError, TypeError):
                continue  # a record being written, or one from another version
        return sorted(found, key=lambda r: r.created_at)

    async def listen_history(
        self, *, ref: str = "", active_only: bool = False, early_exit: bool = False
    ) -> AsyncIterator[HistoryEvent]:
        """BuildKit's ``ListenBuildHistory``: a ``started`` event for each build running now,
        then (unless ``active_only``) a ``complete`` event for each finished one, oldest first;
        then, unless ``early_exit``, every event from then on as it happens (``started``,
        ``complete``, ``deleted``). ``ref`` keeps only that build's events."""
        if ref:
            _check_ref(ref)
        send, receive = anyio.create_memory_object_stream[HistoryEvent](math.inf)
        # Subscribed and the running builds taken at once (no await between): no build is
        # missed or told twice as started.
        self._listeners.add(send)
        running = [copy.deepcopy(r) for r in self._running.values() if not ref or r.ref == ref]
        try:
            for record in running:
                yield HistoryEvent("started", record)
            told: set[str] = set()
            if not active_only:
                for record in await self.history(ref=ref):
                    told.add(record.ref)
                    yield HistoryEvent("complete", record)
            if early_exit:
                return
            async for event in receive:
                if ref and event.record.ref != ref:
                    continue
                if event.type == "complete" and event.record.ref in told:
                    # It ended while the finished ones were read: they had it already.
                    told.discard(event.record.ref)
                    continue
                if event.type == "deleted":
                    told.discard(event.record.ref)
                yield event
        finally:
            self._listeners.discard(send)
            send.close()
            receive.close()

    async def forget_history(self, ref: str) -> None:
        """Delete finished build ``ref``'s record and journal (``UpdateBuildHistory``)."""
        _check_ref(ref)
        self._owner("deleting a build's record")
        if ref in self._running:
            raise UserError(f"build {ref} is still running")
        found = await self.history(ref=ref)
        if not found:
            raise UserError(f"no build {ref} in the history")
        await anyio.to_thread.run_sync(self._unlink_record, ref)
        self._publish("deleted", found[0])

    def _unlink_record(self, ref: str) -> None:
        (self.history_dir / f"{ref}.json").unlink(missing_ok=True)
        (self.history_dir / f"{ref}.jsonl").unlink(missing_ok=True)

    # -- the store --------------------------------------------------------------------------

    async def disk_usage(self, filters: Sequence[str] = ()) -> list[UsageRecord]:
        """Every record of the store with the disk it uses (``buildctl du``)."""
        from llbkit.core.cache.usage import parse_filters

        match = parse_filters(filters)
        records = await anyio.to_thread.run_sync(disk_usage, self.store)
        return [r for r in records if match(r)]

    async def prune(self, request: PruneRequest) -> list[UsageRecord]:
        """Delete unreferenced records as BuildKit's prune does; what a build holds stays."""
        self._owner("prune")
        return await anyio.to_thread.run_sync(
            lambda: prune(
                self.store,
                filters=request.filters,
                all=request.all,
                keep_duration=request.keep_duration,
                keep_bytes=request.keep_bytes,
            )
        )

    def gc_rules(self) -> list[GCRule]:
        return self.config.gc_rules or default_gc_rules(
            self.config.gc_keep_storage, self.store.root.path
        )

    def maybe_gc(self, *, force: bool = False) -> list[UsageRecord]:
        """Apply the GC policy, at most once per ``gc_interval`` (as BuildKit throttles it)."""
        if (not self.config.gc and not force) or self.store.root.readonly:
            return []
        # Builds that end together: the first runs GC, the others then see it has run.
        with self._gc_lock:
            last = self.store.last_gc()
            if last is not None and time.time() - last < self.config.gc_interval and not force:
                return []
            removed = apply_gc(self.store, self.gc_rules())
            self.store.set_last_gc(time.time())
            return removed

    # -- workers ----------------------------------------------------------------------------

    async def workers(self) -> list[WorkerRecord]:
        """The enabled workers, the default (which runs builds) first (``buildctl debug
        workers``); one store, so one GC policy for all."""
        self._owner("workers")  # starting a worker writes into the root
        records = []
        for name, executor in await self.drivers.executors():
            id_file = self.drivers.state_dir(GROUP_WORKERS, name) / "workerid"
            if not id_file.exists():
                id_file.write_text(new_ref())  # BuildKit's worker IDs look like build refs
            records.append(
                WorkerRecord(
                    id_file.read_text().strip(),
                    list(executor.platforms),
                    dict(executor.labels),
                    self.gc_rules(),
                )
            )
        return records

    async def info(self) -> Info:
        """What answers: ``llbkit``, its version (``buildctl debug info``)."""
        return Info()


_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_ref(ref: str) -> None:
    """A ref names files under ``<root>/history``, so it must be a plain name."""
    if not _REF.fullmatch(ref):
        raise UserError(
            f"invalid build ref {ref!r}: use letters, digits, '_', '.' and '-' "
            "(new_ref() makes one)"
        )


def _record(request: SolveRequest) -> BuildHistoryRecord:
    return BuildHistoryRecord(
        ref=request.ref,
        frontend=request.frontend,
        frontend_attrs=_without_secrets(request.frontend_attrs),
        exporters=[{"type": e.type, "attrs": dict(e.attrs)} for e in request.exporters],
        created_at=time.time(),
    )


def _without_secrets(attrs: Mapping[str, str]) -> dict[str, str]:
    """Frontend attributes as history keeps them: buildctl hands its ``--import-cache``
    entries to the frontend (``cache-imports``, JSON), credentials and all; those are blanked."""
    from llbkit.core.control.build import _scrubbed

    kept = dict(attrs)
    for key in ("cache-imports", "cache-from"):
        if key not in kept:
            continue
        try:
            entries = json.loads(kept[key])
        except (ValueError, RecursionError):
            entries = None
        if not isinstance(entries, list):
            kept[key] = "***"
            continue
        for entry in entries:
            own = entry.get("Attrs") if isinstance(entry, dict) else None
            if isinstance(own, dict):
                entry["Attrs"] = {
                    k: _scrubbed(str(v), {k: str(v)}) if isinstance(v, str) else v
                    for k, v in own.items()
                }
        kept[key] = json.dumps(entries)
    return kept


class _StepCounter:
    """Counts a build's steps from its progress, for its history record."""

    def __init__(self) -> None:
        self.steps: dict[str, tuple[bool, bool]] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if type(event) is Vertex:
            self.steps[event.digest] = (event.cached, event.completed is not None)

    def fill(self, record: BuildHistoryRecord) -> None:
        record.num_total_steps = len(self.steps)
        record.num_cached_steps = sum(c for c, _ in self.steps.values())
        record.num_completed_steps = sum(d for _, d in self.steps.values())
