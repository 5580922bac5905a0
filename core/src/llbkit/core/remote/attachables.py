"""The client's side of a session: the services the daemon calls back (BuildKit's
"attachables"), answering from an :class:`~llbkit.core.client.embedded.EmbeddedClient` — the
same object an embedded build reads from, so both ways see the same files and secrets."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.api._pb import (
    auth_pb2,
    auth_pb2_grpc,
    filesync_pb2_grpc,
    fsutil_pb2,
    health_pb2,
    health_pb2_grpc,
    packets_pb2,
    secrets_pb2,
    secrets_pb2_grpc,
    ssh_pb2,
    ssh_pb2_grpc,
)
from llbkit.core.api.protowire import bytes_message_data
from llbkit.core.errors import UserError
from llbkit.core.fs.archivefile import Held, archive_file
from llbkit.core.session.methods import (
    AUTH,
    BATCHED_FILE_SEND,
    BATCHED_FILE_SYNC,
    EXPORTER_ID,
    FILE_SEND,
    FILE_SYNC,
    HEALTH,
    SECRETS,
    SSH_CHECK,
    SSH_FORWARD,
)
from llbkit.core.session.relay import pump

if TYPE_CHECKING:
    from llbkit.core.client.embedded import EmbeddedClient

__all__ = ["Output", "exposed_methods", "serve_attachables"]

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Output:
    """Where exporter ``n``'s output lands on this machine: a file (``-``: stdout) or a
    directory."""

    dest: str
    directory: bool


def _metadata(context: Context) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata() or ():
        found.setdefault(key, []).append(value.decode() if isinstance(value, bytes) else value)
    return found


class _ServerPackets:
    """A DiffCopy call on the serving side, as a packet stream."""

    def __init__(self, requests: AsyncIterator[Any], context: Context) -> None:
        self.requests = requests
        self.context = context

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        await self.context.write(packet)

    async def recv(self) -> fsutil_pb2.Packet | None:
        try:
            message: fsutil_pb2.Packet = await anext(self.requests)
        except StopAsyncIteration:
            return None
        return message


class FileSync(filesync_pb2_grpc.FileSyncServicer):
    """``--local`` directories, sent as the daemon asks (only what it lacks)."""

    def __init__(self, client: EmbeddedClient) -> None:
        self.client = client

    async def DiffCopy(self, request_iterator: Any, context: Context) -> None:
        await self._send(_ServerPackets(request_iterator, context), context)

    async def DiffCopyBatched(self, request_iterator: Any, context: Context) -> None:
        """The same, many packets to a message (llbkit's own method; see packets.proto)."""
        from llbkit.core.session.batched import batched_packets

        async def read() -> packets_pb2.Packets | None:
            try:
                message: packets_pb2.Packets = await anext(request_iterator)
            except StopAsyncIteration:
                return None
            return message

        async with batched_packets(context.write, read) as packets:
            await self._send(packets, context)

    async def _send(self, packets: Any, context: Context) -> None:
        from llbkit.core.session.diffcopy_send import send_tree

        asked = _metadata(context)
        name = (asked.get("dir-name") or [""])[0]
        root = self.client.locals.get(name)
        if root is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no access allowed to dir {name!r}")
            return
        try:
            await send_tree(
                packets,
                root,
                include=asked.get("include-patterns", []),
                exclude=asked.get("exclude-patterns", []),
                follow_paths=asked.get("followpaths", []),
            )
        except UserError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))


def _batched_file_sync_handler(file_sync: FileSync) -> Any:
    service, _, method = BATCHED_FILE_SYNC.strip("/").partition("/")
    handler: Any = grpc.stream_stream_rpc_method_handler(
        file_sync.DiffCopyBatched,
        request_deserializer=packets_pb2.Packets.FromString,
        response_serializer=None,  # the stream writes encoded Packets messages itself
    )
    return grpc.method_handlers_generic_handler(service, {method: handler})


def _as_ours(path: str, stat: fsutil_pb2.Stat) -> bool:
    """An output lands owned by whoever runs the client, as buildctl's does."""
    stat.uid, stat.gid = os.getuid(), os.getgid()
    return True


def _file_send_handler(
    client: EmbeddedClient, outputs: Sequence[Output], held: Held | None = None
) -> Any:
    """FileSend.DiffCopy, by hand: its messages are BytesMessage for a file and fsutil
    packets for a directory, so they arrive undecoded and the output decides."""

    @contextlib.asynccontextmanager
    async def archive(dest: str) -> AsyncIterator[Any]:
        if dest == "-" or held is None:
            async with client.open_output(dest) as sink:
                yield sink
            return
        from llbkit.core.client.embedded import FileSink

        with archive_file(dest, UserError, held=held) as stream:
            yield FileSink(stream)

    async def diff_copy(request_iterator: AsyncIterator[bytes], context: Context) -> None:
        ids = _metadata(context).get(EXPORTER_ID) or ["0"]
        try:
            output = outputs[int(ids[0])]
        except (ValueError, IndexError):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"exporter {ids[0]} not found")
            return
        try:
            if output.directory:
                from llbkit.core.session.diffcopy_receive import receive_tree

                class Packets:
                    async def send(self, packet: fsutil_pb2.Packet) -> None:
                        await context.write(packet.SerializeToString())

                    async def recv(self) -> fsutil_pb2.Packet | None:
                        try:
                            data = await anext(request_iterator)
                        except StopAsyncIteration:
                            return None
                        return fsutil_pb2.Packet.FromString(data)

                target = Path(output.dest)
                target.mkdir(parents=True, exist_ok=True)
                await receive_tree(Packets(), target, merge=True, filter=_as_ours)
                return
            async with archive(output.dest) as sink:
                async for data in request_iterator:
                    await sink.write(bytes_message_data(data))
                # The messages end the same way whether the daemon finished or the call was
                # cut (grpcio tells the handler of a cancel a moment later): answering tells
                # them apart, as a cut call refuses it (CancelledError, so no file from it).
                await context.send_initial_metadata(())
        except UserError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        except OSError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, f"{output.dest}: {err.strerror}")

    handler: Any = grpc.stream_stream_rpc_method_handler(diff_copy)
    return grpc.method_handlers_generic_handler("moby.filesync.v1.FileSend", {"DiffCopy": handler})


def _batched_file_send_handler(outputs: Sequence[Output]) -> Any:
    """A directory output's packets, many to a message (llbkit's own; see packets.proto)."""

    async def diff_copy(
        request_iterator: AsyncIterator[packets_pb2.Packets], context: Context
    ) -> None:
        from llbkit.core.session.batched import batched_packets
        from llbkit.core.session.diffcopy_receive import receive_tree

        ids = _metadata(context).get(EXPORTER_ID) or ["0"]
        try:
            output = outputs[int(ids[0])]
        except (ValueError, IndexError):
            output = None
        if output is None or not output.directory:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no directory output {ids[0]}")
            return

        async def read() -> packets_pb2.Packets | None:
            try:
                return await anext(request_iterator)
            except StopAsyncIteration:
                return None

        try:
            target = Path(output.dest)
            target.mkdir(parents=True, exist_ok=True)
            async with batched_packets(context.write, read) as packets:
                await receive_tree(packets, target, merge=True, filter=_as_ours)
        except UserError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        except OSError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, f"{output.dest}: {err.strerror}")

    service, _, method = BATCHED_FILE_SEND.strip("/").partition("/")
    handler: Any = grpc.stream_stream_rpc_method_handler(
        diff_copy, request_deserializer=packets_pb2.Packets.FromString
    )
    return grpc.method_handlers_generic_handler(service, {method: handler})


class Secrets(secrets_pb2_grpc.SecretsServicer):
    def __init__(self, client: EmbeddedClient) -> None:
        self.client = client

    async def GetSecret(self, request: Any, context: Context) -> Any:
        if request.ID not in self.client.secrets:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"secret {request.ID} not found")
        return secrets_pb2.GetSecretResponse(data=self.client.secrets[request.ID])


class SSH(ssh_pb2_grpc.SSHServicer):
    """``--ssh`` agents: each forwarded connection is a connection to the local agent."""

    def __init__(self, client: EmbeddedClient) -> None:
        self.client = client

    async def CheckAgent(self, request: Any, context: Context) -> Any:
        if request.ID not in self.client.ssh:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unset ssh forward key {request.ID}")
        return ssh_pb2.CheckAgentResponse()

    async def ForwardAgent(self, request_iterator: Any, context: Context) -> None:
        ids = _metadata(context).get("buildkit.ssh.id") or ["default"]
        path = self.client.ssh.get(ids[0])
        if path is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unset ssh forward key {ids[0]}")
            return
        reader, writer = await asyncio.open_unix_connection(str(path))

        async def incoming() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                yield message.data

        async def send(data: bytes) -> None:
            await context.write(ssh_pb2.BytesMessage(data=data))

        await pump(incoming(), send, reader, writer)


class Auth(auth_pb2_grpc.AuthServicer):
    """Registry credentials stay here: the daemon asks for a host's when a registry wants
    them, and this machine's Docker config answers."""

    async def Credentials(self, request: Any, context: Context) -> Any:
        from llbkit.core.registry.credentials import docker_config_credentials

        found = docker_config_credentials(request.Host)
        if found is None:
            return auth_pb2.CredentialsResponse()
        return auth_pb2.CredentialsResponse(Username=found[0], Secret=found[1])


class Health(health_pb2_grpc.HealthServicer):
    """BuildKit's daemon asks every few seconds whether the client is still there."""

    async def Check(self, request: Any, context: Context) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def exposed_methods(
    client: EmbeddedClient, outputs: Sequence[Output], stores: Mapping[str, Path] | None = None
) -> list[str]:
    """The methods the session offers, as its headers list them."""
    methods = [HEALTH, SECRETS, AUTH]
    if client.locals:
        methods += [FILE_SYNC, "/moby.filesync.v1.FileSync/TarStream", BATCHED_FILE_SYNC]
    if outputs:
        methods.append(FILE_SEND)
        if any(o.directory for o in outputs):
            methods.append(BATCHED_FILE_SEND)
    if client.ssh:
        methods += [SSH_CHECK, SSH_FORWARD]
    if stores:
        from llbkit.core.remote.content import CONTENT_METHODS

        methods += CONTENT_METHODS
    return methods


@contextlib.asynccontextmanager
async def serve_attachables(
    client: EmbeddedClient,
    outputs: Sequence[Output],
    socket_path: str,
    stores: Mapping[str, Path] | None = None,
    held: Held | None = None,
) -> AsyncIterator[grpc.aio.Server]:
    """The session's services, served on ``socket_path`` (a private socket); archives
    received whole wait in ``held`` for the build to succeed, if given."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20),
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)  # type: ignore[no-untyped-call]
    auth_pb2_grpc.add_AuthServicer_to_server(Auth(), server)  # type: ignore[no-untyped-call]
    secrets_pb2_grpc.add_SecretsServicer_to_server(Secrets(client), server)  # type: ignore[no-untyped-call]
    if client.locals:
        file_sync = FileSync(client)
        filesync_pb2_grpc.add_FileSyncServicer_to_server(file_sync, server)  # type: ignore[no-untyped-call]
        server.add_generic_rpc_handlers((_batched_file_sync_handler(file_sync),))
    if client.ssh:
        ssh_pb2_grpc.add_SSHServicer_to_server(SSH(client), server)  # type: ignore[no-untyped-call]
    if outputs:
        server.add_generic_rpc_handlers((_file_send_handler(client, outputs, held),))
        server.add_generic_rpc_handlers((_batched_file_send_handler(outputs),))
    if stores:
        from llbkit.core.remote.content import ContentStores, content_handler

        server.add_generic_rpc_handlers((content_handler(ContentStores(stores)),))
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)
