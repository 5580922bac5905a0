"""The Controller's methods over a daemon: what the CLI's commands call when an address is
given, so that every command reads the same embedded or remote."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.api._pb import control_pb2
from llbkit.core.control import wire
from llbkit.core.control.errdetails import STATUS_DETAILS
from llbkit.core.control.request import ExporterRequest, PruneRequest, SolveRequest, SolveResponse
from llbkit.core.errors import UserError
from llbkit.core.remote.attachables import Output, exposed_methods, serve_attachables
from llbkit.core.remote.connect import Endpoint, failure, open_channel
from llbkit.core.remote.failures import ERROR_DETAIL, failed_solve
from llbkit.core.session.methods import shared_key
from llbkit.core.session.relay import BUFFER, pump

if TYPE_CHECKING:
    from llbkit.core.cache.usage import UsageRecord
    from llbkit.core.client.embedded import EmbeddedClient
    from llbkit.core.control.controller import (
        BuildHistoryRecord,
        HistoryEvent,
        Info,
        WorkerRecord,
    )
    from llbkit.core.fs.archivefile import Held
    from llbkit.core.plugins.progress import SolveStatus

__all__ = ["RemoteController"]

#: the exporters whose output this machine receives (their dest stays here, as buildctl's)
CLIENT_OUTPUTS = frozenset({"local", "tar", "oci", "docker"})


def _outputs(request: SolveRequest) -> tuple[SolveRequest, list[Output]]:
    """The request without the dests this machine keeps, and what each exporter's output is."""
    outputs: list[Output] = []
    exporters = []
    for exporter in request.exporters:
        attrs = dict(exporter.attrs)
        dest = attrs.pop("dest", None) if exporter.type in CLIENT_OUTPUTS else None
        if dest is None and exporter.type in ("tar", "oci", "docker"):
            dest = "-"
        if dest is not None:
            tar = attrs.get("tar", "true").lower() not in ("false", "0")
            directory = exporter.type == "local" or not tar
            outputs.append(Output(dest, directory))
        else:
            outputs.append(Output("", False))
        exporters.append(ExporterRequest(exporter.type, attrs))
    return replace(request, exporters=exporters), outputs


def _raise_typed(err: grpc.aio.AioRpcError, address: str) -> None:
    """A build's failure as the CLI shows an embedded one (the step's log tail, the source)."""
    trailer = dict(err.trailing_metadata() or ())
    details, detail = trailer.get(STATUS_DETAILS), trailer.get(ERROR_DETAIL)
    raise failed_solve(
        err.details() or "",
        address,
        code_name=err.code().name.lower(),
        status_details=details if isinstance(details, bytes) else None,
        error_detail=detail if isinstance(detail, bytes) else None,
    ) from None


class RemoteController:
    """A daemon, spoken to as the Controller is."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._channel: grpc.aio.Channel | None = None

    # The channel belongs to the event loop that makes it: one per anyio.run.
    @contextlib.asynccontextmanager
    async def _control(self) -> AsyncIterator[Any]:
        from llbkit.core.api._pb import control_pb2_grpc
        from llbkit.core.api.protowire import bytes_message, bytes_message_data

        channel = open_channel(self.endpoint)
        try:
            stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
            # Session's messages as their bytes, as the daemon takes them (api/protowire): one
            # copy of a MiB where the protobuf runtime made two, each way.
            stub.Session = channel.stream_stream(
                "/moby.buildkit.v1.Control/Session",
                request_serializer=bytes_message,
                response_deserializer=bytes_message_data,
            )
            yield stub
        finally:
            await channel.close()

    def close(self) -> None:
        return None

    async def stop_worker(self) -> None:
        """The daemon's worker is the daemon's: nothing to stop here."""
        return None

    def __enter__(self) -> RemoteController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def solve(self, request: SolveRequest) -> SolveResponse:
        """One build on the daemon, this machine serving its session."""
        from llbkit.core.client.embedded import EmbeddedClient

        client = request.session
        if not isinstance(client, EmbeddedClient):
            raise UserError("a build through a daemon takes its client's files from the CLI")
        from llbkit.core.fs.archivefile import Held
        from llbkit.core.remote.stores import local_stores, update_indexes

        sent, outputs = _outputs(request)
        local = local_stores(sent, client.layouts)
        session_id = os.urandom(16).hex()
        held = Held()  # archives received whole, placed if the build succeeds
        with held.settled(UserError):
            async with (
                self._control() as control,
                self._session(control, client, outputs, session_id, local.stores, held=held),
            ):
                try:
                    answer = await control.Solve(
                        wire.solve_request_to_pb(local.request, session_id)
                    )
                except grpc.aio.AioRpcError as err:
                    _raise_typed(err, self.endpoint.address)
        response = wire.solve_response_from_pb(request.ref, answer)
        await update_indexes(local, response)
        return response

    @contextlib.asynccontextmanager
    async def _session(
        self,
        control: Any,
        client: EmbeddedClient,
        outputs: Sequence[Output],
        session_id: str,
        stores: Mapping[str, Path] | None = None,
        *,
        held: Held | None = None,
    ) -> AsyncIterator[None]:
        """This machine's services, reachable by the daemon for the block."""
        import tempfile

        directory = tempfile.mkdtemp(prefix="llbkit-client-")
        os.chmod(directory, 0o700)
        socket_path = os.path.join(directory, "attachables.sock")
        metadata = [
            ("x-docker-expose-session-uuid", session_id),
            ("x-docker-expose-session-name", "llbkit"),
            ("x-docker-expose-session-sharedkey", shared_key(client.locals)),
        ]
        metadata += [
            ("x-docker-expose-session-grpc-method", m)
            for m in exposed_methods(client, outputs, stores)
        ]
        try:
            async with serve_attachables(client, outputs, socket_path, stores, held):
                call = control.Session(metadata=tuple(metadata))
                reader, writer = await asyncio.open_unix_connection(socket_path, limit=BUFFER)
                relay = asyncio.ensure_future(pump(call, call.write, reader, writer))
                try:
                    yield
                finally:
                    relay.cancel()
                    call.cancel()
                    with contextlib.suppress(BaseException):
                        await relay
        finally:
            with contextlib.suppress(OSError):
                os.unlink(socket_path)
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    async def status(self, ref: str) -> AsyncIterator[SolveStatus]:
        async with self._control() as control:
            try:
                async for response in control.Status(control_pb2.StatusRequest(Ref=ref)):
                    yield wire.status_from_pb(response)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.CANCELLED:
                    raise failure(err, self.endpoint.address) from None

    async def disk_usage(self, filters: Sequence[str] = ()) -> list[UsageRecord]:
        async with self._control() as control:
            try:
                answer = await control.DiskUsage(control_pb2.DiskUsageRequest(filter=filters))
            except grpc.aio.AioRpcError as err:
                raise failure(err, self.endpoint.address) from None
        return [wire.usage_from_pb(r) for r in answer.record]

    async def prune(self, request: PruneRequest) -> list[UsageRecord]:
        async with self._control() as control:
            try:
                return [
                    wire.usage_from_pb(r) async for r in control.Prune(wire.prune_to_pb(request))
                ]
            except grpc.aio.AioRpcError as err:
                raise failure(err, self.endpoint.address) from None

    async def workers(self) -> list[WorkerRecord]:
        async with self._control() as control:
            try:
                answer = await control.ListWorkers(control_pb2.ListWorkersRequest())
            except grpc.aio.AioRpcError as err:
                raise failure(err, self.endpoint.address) from None
        return [wire.worker_from_pb(r) for r in answer.record]

    async def info(self) -> Info:
        async with self._control() as control:
            try:
                answer = await control.Info(control_pb2.InfoRequest())
            except grpc.aio.AioRpcError as err:
                raise failure(err, self.endpoint.address) from None
        return wire.info_from_pb(answer)

    async def listen_history(
        self, *, ref: str = "", active_only: bool = False, early_exit: bool = False
    ) -> AsyncIterator[HistoryEvent]:
        """``ListenBuildHistory``: the events :meth:`Controller.listen_history` gives."""
        request = control_pb2.BuildHistoryRequest(
            Ref=ref, ActiveOnly=active_only, EarlyExit=early_exit
        )
        async with self._control() as control:
            try:
                async for event in control.ListenBuildHistory(request):
                    yield wire.history_event_from_pb(event)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.CANCELLED:
                    raise failure(err, self.endpoint.address) from None

    async def history(
        self, *, ref: str = "", active_only: bool = False
    ) -> list[BuildHistoryRecord]:
        """Finished builds (oldest first), or only ``ref``; ``active_only``: the running ones,
        as :meth:`Controller.history` lists them."""
        wanted = "started" if active_only else "complete"
        found = [
            event.record
            async for event in self.listen_history(
                ref=ref, active_only=active_only, early_exit=True
            )
            if event.type == wanted
        ]
        return sorted(found, key=lambda r: r.created_at)

    async def forget_history(self, ref: str) -> None:
        """``UpdateBuildHistory`` with ``Delete``: build ``ref``'s record and log go."""
        async with self._control() as control:
            try:
                await control.UpdateBuildHistory(
                    control_pb2.UpdateBuildHistoryRequest(Ref=ref, Delete=True)
                )
            except grpc.aio.AioRpcError as err:
                raise failure(err, self.endpoint.address) from None
