"""One build, from its request to its exports: the flow every client's build goes through.

request → frontend (or the given definition) → solver → exporters → cache exporters →
exporters' finalize. Everything the build holds is under one lease that ends with it; every
progress record goes to the build's status.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llbkit.core.config import ENTITLEMENTS
from llbkit.core.errors import ConfigError, SourceError, UserError
from llbkit.core.llb.definition import load_definition
from llbkit.core.plugins.context import BuildResult, Platform, Result
from llbkit.core.plugins.exporter import ExportInfo, ExportJob
from llbkit.core.plugins.frontend import FrontendJob
from llbkit.core.plugins.progress import (
    ProgressEvent,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)
from llbkit.core.solver.solver import BuildFailed

if TYPE_CHECKING:
    from llbkit.core.cache.leases import Lease
    from llbkit.core.control.controller import Controller
    from llbkit.core.control.request import SolveRequest

__all__ = ["BuildOutcome", "FrontendFailed", "run_build"]

Emit = Callable[[ProgressEvent], None]


class FrontendFailed(SourceError):
    """The frontend refused the build (a Dockerfile error...); ``source`` shows where."""


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


class _StepSink:
    """Progress of a step that is not a vertex of the definition (an export)."""

    def __init__(self, emit: Emit, digest: str) -> None:
        self.emit = emit
        self.digest = digest

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        now = time.time()
        self.emit(
            VertexStatus(
                id, self.digest, now, current=current, total=total, completed=now if done else None
            )
        )

    def log(self, data: bytes, *, stream: int = 1) -> None:
        self.emit(VertexLog(self.digest, time.time(), stream, bytes(data)))

    def warn(self, message: str, *, detail: Sequence[str] = (), url: str = "") -> None:
        self.emit(VertexWarning(self.digest, time.time(), message, 1, tuple(detail), url))


async def _resolve(
    controller: Controller, request: SolveRequest, jobs: list[ExportJob]
) -> FrontendJob | None:
    """Every driver the request names, checked before any work: a bad key fails fast. Each
    export job joins ``jobs`` as soon as it exists, for the caller to close."""
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
    if request.cache_exports or request.cache_imports:
        raise UserError("exporting and importing the build cache is not in this release of llbkit")
    frontend_job = None
    if request.frontend:
        frontend_job = await controller.drivers.frontend(request.frontend).resolve(
            dict(request.frontend_attrs)
        )
    elif request.definition is None:
        raise ConfigError("a build needs a definition or a frontend")
    for exporter in request.exporters:
        driver = controller.drivers.exporter(exporter.type)
        jobs.append(await driver.resolve(dict(exporter.attrs)))
    return frontend_job


async def run_build(
    controller: Controller,
    request: SolveRequest,
    lease: Lease,
    emit: Emit,
    jobs: list[ExportJob],
) -> BuildOutcome:
    """Solve and export; the export jobs made join ``jobs``, which the caller closes
    (``aclose``) whatever happens, as it releases the lease."""
    frontend_job = await _resolve(controller, request, jobs)
    allow = list(request.entitlements)  # each granted by the engine's config (_resolve)
    definitions, metadata, source = await _definitions(
        controller, request, frontend_job, lease=lease, emit=emit, allow=allow
    )
    refs: dict[str, Result] = {}
    for platform, data in definitions.items():
        loaded = load_definition(data, source=source)
        solved = await controller.solver.solve(loaded, request.session, emit, lease, allow=allow)
        if solved is not None:
            refs[platform] = solved
    result = BuildResult(refs, metadata)
    steps = [
        _ExportStep(
            job, "sha256:" + hashlib.sha256(f"{request.ref}-export-{n}".encode()).hexdigest(), emit
        )
        for n, job in enumerate(jobs)
    ]
    responses: list[dict[str, str]] = []
    try:
        for step in steps:
            info = ExportInfo(request.ref, request.session, _StepSink(emit, step.digest))
            responses.append(dict(await step.run(step.job.export, result, info)))
        # Each export's step stays open through its finalize (a push shows under it).
        for step, answer in zip(steps, responses, strict=True):
            info = ExportInfo(request.ref, request.session, _StepSink(emit, step.digest))
            answer.update(await step.run(step.job.finalize, info, last=True))
    finally:
        for step in steps:
            step.cancel()
    merged = {k: v for answer in responses for k, v in answer.items()}
    single = result.single
    if single is not None and single.key:
        merged.setdefault("llbkit.result.key", single.key)
    return BuildOutcome(request.ref, result, merged, tuple(responses))


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
) -> tuple[dict[str, bytes], Mapping[str, bytes], str]:
    """The definitions to solve, by platform: the given one, or what the frontend made."""
    if frontend_job is None:
        assert request.definition is not None
        return {str(Platform()): request.definition}, {}, request.source
    from llbkit.core.control.frontend_client import EngineFrontendClient

    client = EngineFrontendClient(
        solver=controller.solver,
        session=request.session,
        lease=lease,
        emit=emit,
        images=controller.drivers.image_resolver(),
        inputs=request.frontend_inputs,
        allow=allow,
        tmp=controller.store.tmp,
        name=request.frontend,
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
