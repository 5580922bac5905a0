"""The engine: one store, one solver, the plugins it uses, and builds run end to end.

Embedded in the CLI's process by default; the daemon (a later piece) serves the same object
over gRPC. A build loads and verifies the definition, resolves its exporters (so a bad
``--output`` fails before any work), solves, exports, records its events, then runs GC.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import apply_gc
from llbkit.core.config import EngineConfig, default_gc_rules
from llbkit.core.errors import UserError
from llbkit.core.llb.definition import load_definition
from llbkit.core.plugins.context import BuildResult, ClientIO, Platform, ProgressEvent
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.core.solver.solver import BuildFailed, SolvedResult, Solver

__all__ = ["BuildOutcome", "Engine", "ExportRequest", "FrontendFailed"]

_GC_INTERVAL = 60.0


@dataclass(frozen=True)
class ExportRequest:
    """One ``--output``: the exporter's name and its attributes."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass
class BuildOutcome:
    """What a build returns to its client."""

    ref: str
    result: SolvedResult | None
    metadata: dict[str, Any]
    events: list[ProgressEvent]
    frontend_metadata: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def result_key(self) -> str | None:
        """The portable key of the result (``None`` for scratch)."""
        return None if self.result is None else self.result.key


async def _export(
    job: Any,
    result: BuildResult,
    client: ClientIO,
    emit: Callable[[ProgressEvent], None],
    *,
    name: str,
    digest: str,
) -> Mapping[str, str]:
    """Run one export as a vertex of its own in the build's progress."""
    started = time.time()
    base = {"name": name, "inputs": [], "started": started}
    emit(ProgressEvent("vertex", digest, started, base))
    try:
        response: Mapping[str, str] = await job.export(result, client)
    except UserError as err:
        done = time.time()
        emit(ProgressEvent("vertex", digest, done, {**base, "completed": done, "error": str(err)}))
        raise
    done = time.time()
    emit(ProgressEvent("vertex", digest, done, {**base, "completed": done}))
    return response


class FrontendFailed(UserError):
    """The frontend refused the build (a Dockerfile error...); ``source`` shows where."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class _FrontendClient:
    """The engine as a frontend sees it: the client's files, solves, image configs."""

    def __init__(
        self, engine: Engine, client: ClientIO, emit: Callable[[ProgressEvent], None]
    ) -> None:
        self.engine = engine
        self.client = client
        self.emit = emit

    async def read_file(self, context: str, path: str) -> bytes:
        import tempfile

        clean = path.strip("/")
        with tempfile.TemporaryDirectory(dir=self.engine.store.tmp) as tmp:
            await self.client.sync_local(context, Path(tmp), include=[clean])
            target = Path(tmp, clean)
            if not target.is_file():
                raise UserError(f"{path}: not found in local directory {context!r}")
            return target.read_bytes()

    async def solve(self, definition: bytes) -> Any:
        loaded = load_definition(definition, source="frontend")
        return await self.engine.solver.solve(loaded, self.client, self.emit)

    async def resolve_image_config(self, ref: str, platform: Platform) -> tuple[str, bytes]:
        from llbkit.core.reference import parse_reference

        driver = self.engine.driver("llbkit.sources", "docker-image")
        image = await driver.resolve_image(parse_reference(ref), platform, "default")
        return image.manifest_digest, image.config_bytes

    def warn(self, message: str) -> None:
        self.emit(ProgressEvent("warning", "", time.time(), {"short": message}))


class Engine:
    """Owns a state root for its lifetime; run builds with :meth:`build`."""

    def __init__(self, store: Store, config: EngineConfig, registry: PluginRegistry) -> None:
        self.store = store
        self.config = config
        self.registry = registry
        self._drivers: dict[tuple[str, str], Any] = {}
        parallelism = config.max_parallelism or max(os.cpu_count() or 1, 1) * 2
        self.solver = Solver(store, self._resolve_source, parallelism, self.executor)
        self._executor: Any = None
        self.hooks = registry.hook_manager()

    @classmethod
    def open(
        cls, root: Path, config: EngineConfig | None = None, registry: PluginRegistry | None = None
    ) -> Engine:
        """Lock and open the store at ``root``."""
        return cls(
            Store.open(root), config or EngineConfig(), registry or PluginRegistry.from_env()
        )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def driver(self, group: str, name: str) -> Any:
        """One instance per engine of each plugin driver used."""
        if (group, name) not in self._drivers:
            state = self.store.root.path / "plugins" / group / name
            state.mkdir(parents=True, exist_ok=True)
            # Registry hosts are engine-wide: image sources pull, image exporters push, caches
            # (later) store with the same mirrors, plain-HTTP and insecure settings.
            config = {"registry": self.config.registry}
            self._drivers[group, name] = self.registry.create_driver(
                group, name, config=config, state_dir=state
            )
        return self._drivers[group, name]

    async def executor(self) -> Any:
        """The ``[worker.oci]`` executor, started on first use."""
        if self._executor is None:
            if self.config.worker.get("enabled", True) is False:
                raise UserError(
                    "[worker.oci] is disabled (enabled = false): nothing runs processes"
                )
            worker = self.driver("llbkit.workers", "oci")
            self._executor = await worker.resolve(dict(self.config.worker))
        return self._executor

    async def _resolve_source(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> Any:
        scheme, sep, _ = identifier.partition("://")
        if not sep:
            raise UserError(f"invalid source identifier {identifier!r}: no scheme")
        return await self.driver("llbkit.sources", scheme).resolve(identifier, attrs, platform)

    async def build(
        self,
        definition: bytes | None,
        client: ClientIO,
        *,
        exports: Sequence[ExportRequest] = (),
        on_event: Callable[[ProgressEvent], None] | None = None,
        no_cache: bool = False,
        allow: Sequence[str] = (),
        source: str = "<stdin>",
        frontend: str = "",
        frontend_opts: Mapping[str, str] | None = None,
    ) -> BuildOutcome:
        """Solve ``definition`` (or what ``frontend`` makes) and run the exports; every event is
        also kept in the history."""
        frontend_job = None
        if frontend:
            driver = self.driver("llbkit.frontends", frontend)
            opts = dict(frontend_opts or {})
            if no_cache:
                opts.setdefault("no-cache", "")
            frontend_job = await driver.resolve(opts)
        jobs = []
        for request in exports:
            exporter = self.driver("llbkit.exporters", request.type)
            jobs.append((request, await exporter.resolve(dict(request.attrs))))
        ref = hashlib.sha256(f"{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:25]
        events: list[ProgressEvent] = []

        def emit(event: ProgressEvent) -> None:
            events.append(event)
            if on_event is not None:
                on_event(event)
            for impl in self.hooks.hook.llbkit_on_progress.get_hookimpls():
                with contextlib.suppress(Exception):  # an observer cannot fail a build
                    impl.function(event=event)

        metadata: dict[str, Any] = {}
        frontend_metadata: Mapping[str, bytes] = {}
        refs: dict[str, SolvedResult] = {}
        try:
            definitions, frontend_metadata, source = await self._definitions(
                frontend_job,
                frontend=frontend,
                definition=definition,
                source=source,
                client=client,
                emit=emit,
            )
            # An entitlement needs both the build's --allow and the engine's config.
            granted = [e for e in allow if e in self.config.insecure_entitlements]
            for platform, data in definitions.items():
                loaded = load_definition(data, source=source)
                solved = await self.solver.solve(
                    loaded, client, emit, no_cache=no_cache, allow=granted
                )
                if solved is not None:
                    refs[platform] = solved
            # One platform: the build's result; several: the first names the build's key.
            result = next(iter(refs.values()), None)
            for n, (request, job) in enumerate(jobs):
                digest = "sha256:" + hashlib.sha256(f"{ref}-export-{n}".encode()).hexdigest()
                held = tuple(layer for r in refs.values() for layer in r.chain)
                with self.store.hold(held):
                    metadata.update(
                        await _export(
                            job,
                            BuildResult(refs, frontend_metadata),
                            client,
                            emit,
                            name=f"exporting to {request.type}",
                            digest=digest,
                        )
                    )
        finally:
            for _, job in jobs:
                await job.aclose()
            await anyio.to_thread.run_sync(self._record, ref, events)
        if result is not None:
            metadata.setdefault("llbkit.result.key", result.key)
        await anyio.to_thread.run_sync(self.maybe_gc)
        return BuildOutcome(ref, result, metadata, events, frontend_metadata)

    async def _definitions(
        self,
        frontend_job: Any,
        *,
        frontend: str,
        definition: bytes | None,
        source: str,
        client: ClientIO,
        emit: Callable[[ProgressEvent], None],
    ) -> tuple[dict[str, bytes], Mapping[str, bytes], str]:
        """The definitions to solve, by platform: the given one, or what the frontend made."""
        if frontend_job is None:
            assert definition is not None
            return {str(Platform()): definition}, {}, source
        try:
            output = await frontend_job.solve(_FrontendClient(self, client, emit))
        except BuildFailed:
            raise
        except UserError as err:
            raise FrontendFailed(
                f"failed to solve: {err}", str(getattr(err, "source", ""))
            ) from None
        return dict(output.definitions), output.metadata, f"frontend {frontend}"

    def _record(self, ref: str, events: list[ProgressEvent]) -> None:
        """Keep the build's whole event stream (every log line) under ``history/``."""
        history = self.store.root.path / "history"
        history.mkdir(exist_ok=True)
        tmp = history / f".{ref}.jsonl"
        with open(tmp, "w", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps(asdict(event), default=str) + "\n")
        tmp.rename(history / f"{ref}.jsonl")

    def maybe_gc(self, *, force: bool = False) -> None:
        """Apply the GC policy, at most once a minute (as BuildKit throttles it)."""
        if not self.config.gc and not force:
            return
        last = self.store.db.last_gc()
        if last is not None and time.time() - last < _GC_INTERVAL and not force:
            return
        rules = self.config.gc_rules or default_gc_rules(
            self.config.gc_keep_storage, self.store.root.path
        )
        apply_gc(self.store, rules)
        self.store.db.set_last_gc(time.time())
