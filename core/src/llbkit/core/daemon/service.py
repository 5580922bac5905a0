"""``moby.buildkit.v1.Control`` served from a Controller: each method translates the request
(:mod:`llbkit.core.control.wire`), calls the Controller, and translates back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.api._pb import control_pb2, control_pb2_grpc
from llbkit.core.control import wire
from llbkit.core.control.errdetails import abort_failed
from llbkit.core.control.request import ExporterRequest, SolveRequest
from llbkit.core.daemon.gateway import Forwarders
from llbkit.core.daemon.sessions import SessionManager
from llbkit.core.errors import BuildFailed, FrontendFailed, UserError
from llbkit.core.registry.credentials import credentials_from
from llbkit.core.remote.failures import ERROR_DETAIL, SOLVE_FAILED
from llbkit.core.session.caller import SessionClientIO, output_marker

if TYPE_CHECKING:
    from llbkit.core.control import Controller

__all__ = ["CLIENT_OUTPUTS", "ERROR_DETAIL", "SOLVE_FAILED", "ControlService"]

#: exporters whose ``dest`` is the client's: buildctl keeps it and receives the output itself
CLIENT_OUTPUTS = frozenset({"local", "tar", "oci", "docker"})
Context = grpc.aio.ServicerContext[Any, Any]


def _with_client_outputs(request: SolveRequest) -> SolveRequest:
    """Exporters whose output the client receives get a ``dest`` naming that output."""
    exporters = []
    for index, asked in enumerate(request.exporters):
        if asked.type in CLIENT_OUTPUTS and "dest" not in asked.attrs:
            asked = ExporterRequest(  # noqa: PLW2901 - the same exporter, with its dest
                asked.type, {**asked.attrs, "dest": output_marker(index)}
            )
        exporters.append(asked)
    return replace(request, exporters=exporters)


def _detail(err: UserError) -> bytes:
    """What llbkit's client shows of a failure besides the source lines (those travel in
    the typed detail buildctl reads too)."""
    if isinstance(err, BuildFailed):
        shown: dict[str, Any] = {
            "kind": "build",
            "name": err.name,
            "reason": err.reason,
            "log_tail": err.log_tail,
        }
    elif isinstance(err, FrontendFailed):
        shown = {"kind": "frontend"}
    else:
        shown = {"kind": "user"}
    return json.dumps(shown).encode()


class ControlService(control_pb2_grpc.ControlServicer):
    """One per daemon; every client's requests go to the one Controller."""

    def __init__(
        self, controller: Controller, sessions: SessionManager, forwarders: Forwarders
    ) -> None:
        self.controller = controller
        self.sessions = sessions
        self.forwarders = forwarders
        self.scratch = Path(controller.store.tmp)

    async def Solve(
        self, request: control_pb2.SolveRequest, context: Context
    ) -> control_pb2.SolveResponse:
        session = None
        forwarder = None
        try:
            if request.Session:
                session = SessionClientIO(
                    await self.sessions.get(request.Session), scratch=self.scratch
                )
            typed = wire.solve_request_from_pb(request, session or _NoSession())
            if typed.definition is None and not typed.frontend:
                # The client is the frontend (buildctl's build): it drives the gateway.
                forwarder = self.forwarders.open(typed.ref)
                typed = replace(typed, frontend_job=forwarder)
            with contextlib.ExitStack() as scope:
                if session is not None and session.shares_credentials:
                    # The client's registry credentials, asked when a registry wants them.
                    scope.enter_context(credentials_from(session.registry_credentials))
                else:  # never the daemon's own: a client without any is anonymous
                    scope.enter_context(credentials_from(_anonymous))
                response = await self.controller.solve(_with_client_outputs(typed))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this call was canceled: the client went, or the daemon stops
            # No one canceled this call: a call to the client's session did, as grpc cancels
            # the calls of a channel that closes. Unanswered, the client would wait forever.
            gone = UserError(
                f"session {request.Session}: the client ended it before the build finished"
            )
            await abort_failed(context, gone, str(gone))
        except UserError as err:
            # buildctl says "failed to solve: " before what a Solve answers, as llbkit's
            # client does: the answer itself does not.
            message = str(err).removeprefix(SOLVE_FAILED)
            # For buildctl, the Dockerfile's lines as buildkitd sends them (a typed detail).
            await abort_failed(context, err, message, ((ERROR_DETAIL, _detail(err)),))
        finally:
            if forwarder is not None:
                self.forwarders.close(forwarder)
            if session is not None:
                await session.aclose()
        return wire.solve_response_to_pb(response)

    async def Status(
        self, request: control_pb2.StatusRequest, context: Context
    ) -> AsyncIterator[control_pb2.StatusResponse]:
        try:
            async for status in self.controller.status(request.Ref):
                for message in wire.status_to_pb(status):
                    yield message
        except UserError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    async def Session(self, request_iterator: AsyncIterator[bytes], context: Context) -> None:
        """The client's byte stream, each message as its bytes (see ``server._add_control``)."""
        await self.sessions.handle(context.invocation_metadata() or (), request_iterator, context)

    async def DiskUsage(
        self, request: control_pb2.DiskUsageRequest, context: Context
    ) -> control_pb2.DiskUsageResponse:
        try:
            records = await self.controller.disk_usage(list(request.filter))
        except UserError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return control_pb2.DiskUsageResponse(record=[wire.usage_to_pb(r) for r in records])

    async def Prune(
        self, request: control_pb2.PruneRequest, context: Context
    ) -> AsyncIterator[control_pb2.UsageRecord]:
        try:
            removed = await self.controller.prune(wire.prune_from_pb(request))
        except UserError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        for record in removed:
            yield wire.usage_to_pb(record)

    async def ListWorkers(
        self, request: control_pb2.ListWorkersRequest, context: Context
    ) -> control_pb2.ListWorkersResponse:
        info = await self.controller.info()
        workers = await self.controller.workers()
        return control_pb2.ListWorkersResponse(
            record=[wire.worker_to_pb(worker, info) for worker in workers]
        )

    async def Info(
        self, request: control_pb2.InfoRequest, context: Context
    ) -> control_pb2.InfoResponse:
        return wire.info_to_pb(await self.controller.info())

    async def ListenBuildHistory(
        self, request: control_pb2.BuildHistoryRequest, context: Context
    ) -> AsyncIterator[control_pb2.BuildHistoryEvent]:
        """Running builds, finished ones (unless ``ActiveOnly``), then, unless ``EarlyExit``,
        each build that starts, ends or is deleted, as it happens."""
        try:
            async for event in self.controller.listen_history(
                ref=request.Ref, active_only=request.ActiveOnly, early_exit=request.EarlyExit
            ):
                yield wire.history_event_to_pb(event)
        except UserError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    async def UpdateBuildHistory(
        self, request: control_pb2.UpdateBuildHistoryRequest, context: Context
    ) -> control_pb2.UpdateBuildHistoryResponse:
        # As BuildKit: Delete deletes; otherwise the record is pinned as Pinned says.
        try:
            if request.Delete:
                await self.controller.forget_history(request.Ref)
            else:
                await self.controller.pin_history(request.Ref, request.Pinned)
        except UserError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        return control_pb2.UpdateBuildHistoryResponse()


async def _anonymous(host: str) -> None:
    return None


class _NoSession:
    """The client of a request that names no session: it offers nothing."""

    def _none(self) -> UserError:
        return UserError(
            "the build needs the client's files, secrets or outputs, but its request names "
            "no session"
        )

    def open_output(self, dest: str) -> Any:
        raise self._none()

    async def write_tree(self, dest: str, tree: Path) -> None:
        raise self._none()

    def directory(self, path: str) -> Any:
        raise self._none()

    async def secret(self, id: str) -> bytes:
        raise self._none()

    def layout_blob(self, store: str, digest: str) -> Any:
        raise self._none()

    async def ssh_agent(self, id: str) -> Path:
        raise self._none()

    def local_identity(self, name: str) -> str:
        raise self._none()

    async def sync_local(self, name: str, dest: Path, **patterns: Any) -> set[str]:
        raise self._none()
