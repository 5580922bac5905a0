"""One build, from its request to its exports: the flow every client's build goes through.

request → frontend (or the given definition) → solver → exporters → cache exporters →
exporters' finalize. Everything the build holds is under one lease that ends with it; every
progress record goes to the build's status.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from llbkit.core.cache.refs import ResultRef
from llbkit.core.control.stepsink import StepSink
from llbkit.core.entitlements import ENTITLEMENTS
from llbkit.core.errors import (
    BuildFailed,
    ConfigError,
    FrontendFailed,
    SourceError,
    UserError,
    one_error,
    refused_by_machine,
)
from llbkit.core.llb.definition import is_empty_definition, load_definition
from llbkit.core.plugins.cache_backend import CacheStore, Direction, EmbedInImage
from llbkit.core.plugins.context import BuildResult, Platform, Result
from llbkit.core.plugins.exporter import ExportInfo, ExportJob, ExportsBlobs
from llbkit.core.plugins.frontend import FrontendJob
from llbkit.core.plugins.progress import (
    ProgressEvent,
    Vertex,
)
from llbkit.core.solver.cache_sources import CacheChain, CacheSource
from llbkit.core.solver.solver import GraphNode

if TYPE_CHECKING:
    from llbkit.core.cache.leases import Lease
    from llbkit.core.control.cache_export import CacheOptions, ExportPlan
    from llbkit.core.control.cache_import import ImportedCache
    from llbkit.core.control.controller import Controller
    from llbkit.core.control.request import CacheOptionsEntry, SolveRequest

__all__ = ["BuildOutcome", "Closable", "FrontendFailed", "run_build"]

Emit = Callable[[ProgressEvent], None]


class Closable(Protocol):
    """What a build holds until its results are released (export jobs, opened caches)."""

    async def aclose(self) -> None: ...


@dataclass
class _CacheEntry:
    """One ``--export-cache`` or ``--import-cache``, opened."""

    type: str
    options: CacheOptions
    #: ``None`` when it could not be opened and ``ignore-error`` said to go on
    opened: CacheStore | EmbedInImage | None
    failure: str = ""
    #: the backend's attributes, whose secrets no message may show
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.type if self.opened is None else self.opened.name


class _ImportHold:
    """Once the build's results are released, forgets how to fetch an import's blobs (they
    stay known as lazy layers, to be imported again); its store is closed as a job of its own."""

    def __init__(self, source: ImportedCache) -> None:
        self.source = source

    async def aclose(self) -> None:
        self.source.close()


@dataclass(frozen=True)
class BuildOutcome:
    """What a build produced, held until the ``Controller.build`` block ends.

    :param result: the result by platform and the frontend's metadata (image config...).
    :param exporter_response: what the exporters answered, merged (``--metadata-file``).
    :param exporter_responses: each exporter's own answer, in the request's order.
    """

    ref: str
    result: BuildResult
    exporter_response: Mapping[str, str] = field(default_factory=dict)
    exporter_responses: Sequence[Mapping[str, str]] = ()


def _blobs_only(jobs: Sequence[ExportJob], *, read_after: bool) -> bool:
    """Whether the build's result goes only to exporters that take blobs: to none at all
    when nothing reads it after the build (an embedded program may)."""
    if not jobs:
        return not read_after
    return all(isinstance(job, ExportsBlobs) and job.blobs_only for job in jobs)


async def _resolve(
    controller: Controller, request: SolveRequest, jobs: list[Closable]
) -> tuple[FrontendJob | None, list[ExportJob]]:
    """The frontend and exporters the request names, checked before any work: a bad key fails
    fast. Each export job joins ``jobs`` as soon as it exists, for the caller to close."""
    for entitlement in request.entitlements:
        if entitlement not in ENTITLEMENTS:
            raise ConfigError(
                f"unknown entitlement {entitlement!r}; known: {', '.join(ENTITLEMENTS)}"
            )
        if entitlement not in controller.config.insecure_entitlements:
            # As BuildKit's daemon says it; the engine's config must grant what a build asks.
            raise UserError(
                f"failed to solve: granting entitlement {entitlement} is not allowed by build "
                "daemon configuration (list it in insecure-entitlements of the engine's config)"
            )
    frontend_job = request.frontend_job
    if frontend_job is not None:
        pass
    elif request.frontend:
        frontend_job = await controller.drivers.frontend(request.frontend).resolve(
            dict(request.frontend_attrs)
        )
    elif request.definition is None:
        raise ConfigError("a build needs a definition or a frontend")
    exports: list[ExportJob] = []
    for exporter in request.exporters:
        driver = controller.drivers.exporter(exporter.type)
        job = await driver.resolve(dict(exporter.attrs))
        jobs.append(job)
        exports.append(job)
    return frontend_job, exports


async def _open_caches(
    controller: Controller, request: SolveRequest, jobs: list[Closable]
) -> tuple[list[_CacheEntry], list[_CacheEntry]]:
    """Every ``--export-cache`` and ``--import-cache``, opened at once (a cloud SDK's client
    takes a while to make); each opened store joins ``jobs``. A bad key fails the build."""
    directions: tuple[tuple[Direction, Sequence[CacheOptionsEntry]], ...] = (
        ("export", request.cache_exports),
        ("import", request.cache_imports),
    )
    wanted = [(direction, entry) for direction, entries in directions for entry in entries]
    opened: list[_CacheEntry | None] = [None] * len(wanted)
    from llbkit.core.control.cache_export import split_attrs  # a build without caches skips it

    async def open_one(n: int, direction: Direction, entry: CacheOptionsEntry) -> None:
        flag = f"--{direction}-cache type={entry.type}"
        options, own = split_attrs(entry.attrs, flag)
        backend = controller.drivers.cache_backend(entry.type)
        what = "exporting cache to" if direction == "export" else "importing cache from"
        try:
            store: CacheStore | EmbedInImage | None = await backend.resolve(
                own, direction, request.session
            )
        except ConfigError as err:  # the user's to fix, ignore-error or not
            raise ConfigError(_scrubbed(str(err), own)) from None
        except Exception as err:  # the cache cannot be reached, or the plugin broke
            failure = _scrubbed(f"{what} {entry.type}: {_said(err)}", own)
            if not options.ignore_error:
                raise UserError(f"failed to solve: {failure}") from None
            store = None
        else:
            failure = ""
        if store is not None and not isinstance(store, EmbedInImage):
            jobs.append(store)
        opened[n] = _CacheEntry(entry.type, options, store, failure, own)

    if len(wanted) == 1:  # the common case, without a task group around it
        await open_one(0, *wanted[0])
    elif wanted:
        with one_error():
            async with anyio.create_task_group() as group:
                for n, (direction, entry) in enumerate(wanted):
                    group.start_soon(open_one, n, direction, entry)
    entries = [entry for entry in opened if entry is not None]
    count = len(request.cache_exports)
    return entries[:count], entries[count:]


class _PendingCache:
    """The build's imported caches, opened and read while the frontend works; a solve the
    frontend asks for waits for them, so it sees what they hold."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.exports: list[_CacheEntry] = []
        self.chain: CacheChain | None = None
        self._ready = anyio.Event()

    async def load(self, request: SolveRequest, emit: Emit, jobs: list[Closable]) -> None:
        try:
            self.exports, imports = await _open_caches(self.controller, request, jobs)
            imported = await _imports(self.controller, imports, emit, jobs)
            if imported:
                self.chain = self.controller.solver.cache.with_imports(imported)
        finally:
            self._ready.set()

    async def ready(self) -> CacheChain | None:
        await self._ready.wait()
        return self.chain


async def _imports(
    controller: Controller, entries: Sequence[_CacheEntry], emit: Emit, jobs: list[Closable]
) -> list[CacheSource]:
    """Read each imported cache's records (a step each, as BuildKit shows them)."""
    found: list[CacheSource] = []
    for n, entry in enumerate(entries):
        step = _Step(emit, f"importing cache manifest from {entry.name}", f"import-{n}")
        step.begin()
        if entry.opened is None:
            step.warn(entry.failure)
            step.end()
            continue
        from llbkit.core.control.cache_import import ImportedCache, open_import

        try:
            remote, records = await open_import(entry.opened)
        except Exception as err:  # a plugin's own failure is one line too, never a traceback
            step.failed(f"importing cache manifest from {entry.name}", err, entry)
            continue
        if not records:
            step.log(f"no cache found at {entry.name}\n")
        source = ImportedCache(
            controller.store,
            remote,
            records,
            functools.partial(_warn_scrubbed, step, entry.attrs),
        )
        jobs.append(_ImportHold(source))
        found.append(source)
        step.end()
    return found


async def run_build(
    controller: Controller,
    request: SolveRequest,
    lease: Lease,
    emit: Emit,
    jobs: list[Closable],
    *,
    read_after: bool = True,
) -> BuildOutcome:
    """Solve and export; the export jobs and caches opened join ``jobs``, which the caller
    closes (``aclose``) whatever happens, as it releases the lease. ``read_after``: the
    caller may read the result's files once this returns."""
    frontend_job, export_jobs = await _resolve(controller, request, jobs)
    allow = list(request.entitlements)  # each granted by the engine's config (_resolve)
    pending = _PendingCache(controller)
    caches = bool(request.cache_exports or request.cache_imports)
    made: list[tuple[dict[str, bytes], Mapping[str, bytes], str]] = []

    async def define() -> None:
        made.append(
            await _definitions(
                controller,
                request,
                frontend_job,
                lease=lease,
                emit=emit,
                allow=allow,
                cache=pending.ready if caches else None,
            )
        )

    if caches:
        with one_error():  # the caches are read while the frontend works
            async with anyio.create_task_group() as group:
                group.start_soon(pending.load, request, emit, jobs)
                group.start_soon(define)
    else:
        await define()
    ((definitions, metadata, source),) = made
    cache, cache_exports = pending.chain, pending.exports
    graph: dict[str, GraphNode] = {}
    refs: dict[str, Result] = {}
    finals: dict[str, tuple[int, ...]] = {}
    for platform, data in definitions.items():
        if not data and frontend_job is not None:
            # A frontend's empty definition is scratch (BuildKit's nil ref): no filesystem,
            # and the image is its config alone.
            continue
        if is_empty_definition(data):  # a scratch result: no layers, as BuildKit exports it
            refs[platform], finals[platform] = ResultRef(controller.store, "", ()), ()
            continue
        loaded = load_definition(data, source=source)
        solved = await controller.solver.solve(
            loaded,
            request.session,
            emit,
            lease,
            allow=allow,
            cache=cache,
            graph=graph if cache_exports else None,  # what a cache export reads, only for one
            lazy_images=_blobs_only(export_jobs, read_after=read_after),
            result_read=bool(export_jobs or request.cache_exports) or read_after,
        )
        if solved is not None:
            refs[platform] = solved
            finals[platform] = solved.chain
    result = BuildResult(refs, metadata)
    plan: ExportPlan | None = None
    inline = None
    if cache_exports:
        from llbkit.core.control.cache_export import ExportPlan

        plan = ExportPlan(controller.store, graph, finals, controller.solver.threads)
        if any(isinstance(c.opened, EmbedInImage) for c in cache_exports):
            inline = plan.inline
    responses, cache_response = await _run_exports(
        controller,
        request,
        result,
        export_jobs,
        emit,
        plan=plan,
        caches=cache_exports,
        inline=inline,
    )
    merged = {k: v for answer in responses for k, v in answer.items()}
    merged.update(cache_response)
    single = result.single
    if single is not None and single.key:
        merged.setdefault("llbkit.result.key", single.key)
    return BuildOutcome(request.ref, result, merged, tuple(responses))


async def _run_exports(
    controller: Controller,
    request: SolveRequest,
    result: BuildResult,
    export_jobs: Sequence[ExportJob],
    emit: Emit,
    *,
    plan: ExportPlan | None,
    caches: Sequence[_CacheEntry],
    inline: Any,
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Each export, then the cache exports, then each export's finalize (a push), in
    BuildKit's order; each export's answer, and the caches'."""
    steps = [
        _ExportStep(
            job, "sha256:" + hashlib.sha256(f"{request.ref}-export-{n}".encode()).hexdigest(), emit
        )
        for n, job in enumerate(export_jobs)
    ]
    responses: list[dict[str, str]] = []
    try:
        for step in steps:
            info = ExportInfo(
                request.ref,
                request.session,
                StepSink(emit, step.digest),
                inline_cache=inline,
                image_store=controller.drivers.image_store,
            )
            responses.append(dict(await step.run(step.job.export, result, info)))
        cache_response = await _export_caches(plan, caches, emit) if plan else {}
        # Each export's step stays open through its finalize (a push shows under it).
        for step, answer in zip(steps, responses, strict=True):
            info = ExportInfo(
                request.ref,
                request.session,
                StepSink(emit, step.digest),
                image_store=controller.drivers.image_store,
            )
            answer.update(await step.run(step.job.finalize, info, last=True))
    finally:
        for step in steps:
            step.cancel()
    return responses, cache_response


#: the step BuildKit names each of its cache exporters by; any other's is its content cache's
_EXPORT_STEPS = {
    "s3": "exporting cache to s3",
    "azblob": "exporting cache to azure blob store",
    "gha": "exporting to GitHub cache",
}


async def _export_caches(
    plan: ExportPlan, entries: Sequence[_CacheEntry], emit: Emit
) -> dict[str, str]:
    """Send the build cache to each ``--export-cache`` that has a store of its own."""
    from llbkit.core.control.cache_export import descriptor_text

    response: dict[str, str] = {}
    stores = [e for e in entries if not isinstance(e.opened, EmbedInImage)]
    for n, entry in enumerate(stores):
        shown = _EXPORT_STEPS.get(entry.type, "exporting content cache")
        step = _Step(emit, shown, f"cache-export-{n}")
        step.begin()
        if entry.opened is None or isinstance(entry.opened, EmbedInImage):
            step.warn(entry.failure)
            step.end()
            continue
        try:
            desc = await plan.push(entry.opened, entry.options, step.sink)
        except Exception as err:  # a plugin's own failure is one line too, never a traceback
            step.failed(f"exporting cache to {entry.name}", err, entry)
            continue
        response["cache.manifest"] = descriptor_text(desc)
        step.end()
    return response


#: attribute names whose values are credentials (BuildKit's s3, azblob, gha and llbkit's http)
SECRET_KEYS = ("token", "secret_access_key", "session_token", "access_key_id", "password")


#: environment variables backends read credentials from (BuildKit's, and the http cache's)
SECRET_ENV = (
    "ACTIONS_RUNTIME_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LLBKIT_CACHE_HTTP_TOKEN",
)


def _scrubbed(text: str, attrs: Mapping[str, str]) -> str:
    """``text`` without any credential given in ``attrs`` or the environment, nor the user,
    password or query (a signature) of a URL given: whatever a backend's error quotes, no
    message, warning or history shows a secret."""
    from urllib.parse import urlsplit

    secrets = [os.environ.get(name, "") for name in SECRET_ENV]
    for key, value in attrs.items():
        if any(k in key.lower() for k in SECRET_KEYS):
            secrets.append(value)
        elif "url" in key.lower() and "://" in value:
            parts = urlsplit(value)
            secrets += [parts.query, parts.password or ""]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _warn_scrubbed(step: _Step, attrs: Mapping[str, str], message: str) -> None:
    step.warn(_scrubbed(message, attrs))


def _said(err: BaseException) -> str:
    """An error as one line: its words, and its type when it is not one of ours."""
    return str(err) if isinstance(err, UserError | OSError) else f"{type(err).__name__}: {err}"


def _cause(name: str, err: BaseException) -> str:
    """The error's words, without the cache's ref again when they begin with it."""
    text = _said(err)
    ref = name.partition(" ")[2]
    return text[len(ref) + 2 :] if ref and text.startswith(f"{ref}: ") else text


class _Step:
    """A step of the build that is not a vertex: importing or exporting a cache."""

    def __init__(self, emit: Emit, name: str, tag: str) -> None:
        self.emit = emit
        self.name = name
        self.digest = "sha256:" + hashlib.sha256(f"{name}-{tag}-{time.time()}".encode()).hexdigest()
        self.sink = StepSink(emit, self.digest)
        self.started = time.time()

    def begin(self) -> None:
        self.emit(Vertex(self.digest, self.name, started=self.started))

    def log(self, text: str) -> None:
        self.sink.log(text.encode())

    def warn(self, message: str) -> None:
        self.sink.warn(message)

    def failed(self, what: str, err: BaseException, entry: _CacheEntry) -> None:
        """A cache that failed: the build's failure, or with ``ignore-error`` a warning."""
        why = _scrubbed(f"{what}: {_cause(entry.name, err)}", entry.attrs)
        if not entry.options.ignore_error:
            self.end(error=why)
            raise UserError(f"failed to solve: {why}") from None
        self.warn(why)
        self.end()

    def end(self, error: str = "") -> None:
        self.emit(
            Vertex(self.digest, self.name, started=self.started, completed=time.time(), error=error)
        )


@dataclass
class _ExportStep:
    """One exporter's step in the build's progress: its export, then its finalize."""

    job: ExportJob
    digest: str
    emit: Emit
    started: float | None = None
    ended: bool = False

    async def run(
        self, call: Callable[..., Awaitable[Mapping[str, str]]], *args: Any, last: bool = False
    ) -> Mapping[str, str]:
        if self.started is None:
            self.started = time.time()
            self.emit(Vertex(self.digest, self.job.description, started=self.started))
        try:
            response = await call(*args)
        except UserError as err:
            # A failed export reads as a failed step: its name, why, and buildctl's box.
            self._end(error=str(err))
            raise BuildFailed(self.job.description, str(err)) from None
        except (OSError, BaseExceptionGroup) as err:
            reason = refused_by_machine(err)
            if reason is None:
                raise  # not the machine's refusal: a bug, with its traceback
            self._end(error=reason)
            raise BuildFailed(self.job.description, reason) from None
        if last:
            self._end()
        return response

    def cancel(self) -> None:
        """Another step failed: a step begun and not ended ends canceled, as in BuildKit."""
        if self.started is not None:
            self._end(error="context canceled")

    def _end(self, error: str = "") -> None:
        if not self.ended:
            self.ended = True
            completed = time.time()
            self.emit(
                Vertex(
                    self.digest,
                    self.job.description,
                    started=self.started,
                    completed=completed,
                    error=error,
                )
            )


async def _definitions(
    controller: Controller,
    request: SolveRequest,
    frontend_job: FrontendJob | None,
    *,
    lease: Lease,
    emit: Emit,
    allow: Sequence[str],
    cache: Callable[[], Awaitable[CacheChain | None]] | None = None,
) -> tuple[dict[str, bytes], Mapping[str, bytes], str]:
    """The definitions to solve, by platform: the given one, or what the frontend made."""
    if frontend_job is None:
        assert request.definition is not None
        return {str(Platform()): request.definition}, {}, request.source
    from llbkit.core.control.frontend_client import EngineFrontendClient
    from llbkit.core.control.layout_images import WithLayouts

    client = EngineFrontendClient(
        solver=controller.solver,
        session=request.session,
        lease=lease,
        emit=emit,
        images=WithLayouts(controller.drivers.image_resolver(), request.session),
        inputs=request.frontend_inputs,
        allow=allow,
        tmp=controller.store.tmp,
        name=request.frontend,
        cache=cache,
    )
    try:
        output = await frontend_job.solve(client)
    except BuildFailed:
        raise
    except SourceError as err:
        raise FrontendFailed(f"failed to solve: {err}", err.source) from None
    except UserError as err:
        raise FrontendFailed(f"failed to solve: {err}") from None
    finally:
        client.close()
    return dict(output.definitions), output.metadata, f"frontend {request.frontend}"
