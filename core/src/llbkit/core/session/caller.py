"""The daemon's side of a session: :class:`SessionClientIO` is the ``ClientIO`` of a build
whose client is elsewhere. Every exporter, source and cache backend reaches the client's
files, secrets and SSH agents through it exactly as through the embedded client, and the
client's services answer (BuildKit's attachables, so buildctl's session works too)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.api._pb import (
    auth_pb2,
    fsutil_pb2,
    packets_pb2,
    secrets_pb2,
    ssh_pb2,
)
from llbkit.core.api.protowire import bytes_message, bytes_message_data
from llbkit.core.errors import UserError, no_ssh_agent
from llbkit.core.session.batched import batched_packets
from llbkit.core.session.calls import read_message
from llbkit.core.session.content import CONTENT_INFO
from llbkit.core.session.methods import (
    AUTH,
    BATCHED_FILE_SEND,
    BATCHED_FILE_SYNC,
    EXPORTER_ID,
    FILE_SEND,
    FILE_SYNC,
    MESSAGE_MAX,
    SECRETS,
    SSH_CHECK,
    SSH_FORWARD,
)
from llbkit.core.session.relay import pump

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ByteSink, ClientDirectory

__all__ = ["OUTPUT_PREFIX", "Session", "SessionClientIO", "output_marker"]

#: what a ``dest`` the client kept for itself reads as on the daemon (one per exporter)
OUTPUT_PREFIX = "client-output:"
EXPORTER_METADATA = "exporter-md-"


def output_marker(index: int) -> str:
    """The ``dest`` of exporter ``index`` whose output the client receives itself."""
    return f"{OUTPUT_PREFIX}{index}"


@dataclass
class Session:
    """One client's session: who it is and the channel on which its services answer."""

    id: str
    name: str
    shared_key: str
    methods: frozenset[str]
    channel: grpc.aio.Channel
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: the client as its connection proves it (a TLS certificate's digest), "" on the socket
    peer: str = ""

    def supports(self, method: str) -> bool:
        return method.lower() in self.methods


class _PacketCall:
    """A DiffCopy call as :mod:`llbkit.core.session.diffcopy`'s packet stream."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def send(self, packet: fsutil_pb2.Packet) -> None:
        await self.call.write(packet)

    async def recv(self) -> fsutil_pb2.Packet | None:
        message = await read_message(self.call)
        return None if message is grpc.aio.EOF else message


class _FileSink:
    """``open_output``'s sink: data goes out as FileSend's BytesMessages, at most a MiB each."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def write(self, data: bytes) -> None:
        if len(data) <= MESSAGE_MAX:  # the usual case: no slice, no copy
            await self.call.write(bytes(data))
            return
        view = memoryview(data)
        for start in range(0, len(view), MESSAGE_MAX):
            await self.call.write(bytes(view[start : start + MESSAGE_MAX]))


def _said(err: grpc.aio.AioRpcError) -> str:
    return err.details() or err.code().name.lower()


async def _ended(call: Any) -> str:
    """What ended ``call``, as its status says (the peer's, or the transport's)."""
    return str(await call.details() or (await call.code()).name.lower())


async def _layout_into_store(channel: grpc.aio.Channel, tree: Path) -> None:
    """The blobs of OCI layout ``tree`` written into the client's ``export`` content store,
    children first (layers and configs, then manifests, then indexes): a reader never finds
    a manifest before its blobs."""
    import anyio

    from llbkit.core.session.content import SessionContentDirectory

    store = SessionContentDirectory(channel, "export", "the output directory")
    levels = await anyio.to_thread.run_sync(_levels, tree)
    for name in sorted(levels, key=lambda name: (levels[name], name)):
        async with store.write(name) as sink:
            with open(tree / name, "rb") as data:
                while chunk := await anyio.to_thread.run_sync(data.read, 1 << 20):
                    await sink.write(chunk)


def _levels(tree: Path) -> dict[str, int]:
    """Each blob of layout ``tree``: 2 for an index index.json names, 1 for a manifest, 0 for
    the rest."""
    import json

    def name(digest: str) -> str:
        return "blobs/" + digest.replace(":", "/", 1)

    levels = {p.relative_to(tree).as_posix(): 0 for p in (tree / "blobs").glob("*/*")}
    for top in json.loads((tree / "index.json").read_bytes()).get("manifests", []):
        top_name = name(top["digest"])
        document = json.loads((tree / top_name).read_bytes())
        listed = document.get("manifests") if isinstance(document, dict) else None
        if isinstance(listed, list):
            levels[top_name] = 2
            for entry in listed:
                levels[name(entry["digest"])] = 1
        else:
            levels[top_name] = 1
    return levels


class SessionClientIO:
    """``ClientIO`` over a session. ``exporters`` are the build's, for telling their outputs
    apart on the client."""

    def __init__(self, session: Session, *, scratch: Path) -> None:
        self.session = session
        self.scratch = scratch
        self._agents: dict[str, Path] = {}
        self._credentials: dict[str, tuple[str, str] | None] = {}
        self._stack = contextlib.AsyncExitStack()

    async def aclose(self) -> None:
        await self._stack.aclose()

    def _require(self, method: str, what: str) -> None:
        if self.session.closed.is_set():
            raise UserError(f"the client's session ended: it no longer shares its {what}")
        if not self.session.supports(method):
            raise UserError(
                f"the client shares no {what} with this build (its session has no {method})"
            )

    # -- outputs ----------------------------------------------------------------------------

    def _exporter_id(self, dest: str) -> str:
        if not dest.startswith(OUTPUT_PREFIX):
            raise UserError(
                f"dest={dest!r} names a path on the daemon's machine; through llbkitd an "
                "output goes to the client, which gives its own dest"
            )
        return dest.removeprefix(OUTPUT_PREFIX)

    def _file_send(self, dest: str, what: str, message: Any = None) -> Any:
        """A FileSend.DiffCopy call to exporter ``dest``'s output, carrying ``message``s, or
        (by default) ``BytesMessage``s given and read as their bytes."""
        self._require(FILE_SEND, what)
        return self.session.channel.stream_stream(
            FILE_SEND,
            request_serializer=message.SerializeToString if message else bytes_message,
            response_deserializer=message.FromString if message else bytes_message_data,
        )(metadata=((EXPORTER_ID, self._exporter_id(dest)),))

    @contextlib.asynccontextmanager
    async def open_output(self, dest: str) -> AsyncIterator[ByteSink]:
        call = self._file_send(dest, "output file")
        try:
            yield _FileSink(call)
            await call.done_writing()
            while await read_message(call) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as err:
            raise UserError(f"sending the output to the client: {_said(err)}") from None
        except asyncio.InvalidStateError:  # a write after the call ended: why it ended
            raise UserError(f"sending the output to the client: {await _ended(call)}") from None
        except BaseException:
            call.cancel()  # the client drops what it received: no half file appears
            raise

    async def write_tree(self, dest: str, tree: Path) -> None:
        from llbkit.core.session.diffcopy import send_tree

        if (
            not self.session.supports(FILE_SEND)
            and self.session.supports(CONTENT_INFO)
            and (tree / "oci-layout").is_file()
        ):
            # buildctl takes ``type=oci|docker,tar=false`` into its own content store
            # ("export") and names the image in index.json itself from the response.
            await _layout_into_store(self.session.channel, tree)
            return
        if self.session.supports(BATCHED_FILE_SEND):
            call: Any = self.session.channel.stream_stream(
                BATCHED_FILE_SEND,
                request_serializer=None,
                response_deserializer=packets_pb2.Packets.FromString,
            )(metadata=((EXPORTER_ID, self._exporter_id(dest)),))
        else:
            # FileSend declares BytesMessage, but a directory travels as fsutil packets
            # (BuildKit sends them on the same method): the bytes on the wire are a Packet each.
            call = self._file_send(dest, "output directory", fsutil_pb2.Packet)
        try:
            if self.session.supports(BATCHED_FILE_SEND):

                async def read() -> packets_pb2.Packets | None:
                    message: Any = await read_message(call)
                    return None if message is grpc.aio.EOF else message

                async with batched_packets(call.write, read) as packets:
                    await send_tree(packets, tree)
            else:
                await send_tree(_PacketCall(call), tree)
            await call.done_writing()  # the client's receiver ends when our side closes
            while await read_message(call) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as err:
            raise UserError(f"sending the output to the client: {_said(err)}") from None
        except asyncio.InvalidStateError:  # a write after the call ended: why it ended
            raise UserError(f"sending the output to the client: {await _ended(call)}") from None
        except BaseException:
            call.cancel()
            raise

    def directory(self, path: str) -> ClientDirectory:
        from llbkit.core.session.content import SessionContentDirectory

        self._require(CONTENT_INFO, f"directory {path} (type=local caches)")
        return SessionContentDirectory(self.session.channel, f"local:{path}", path)

    @contextlib.asynccontextmanager
    async def layout_blob(self, store: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        from llbkit.core.session.content import read_blob

        if not self.session.supports(CONTENT_INFO):
            raise UserError(
                f"the build reads OCI layout {store!r}, which the client does not share "
                f"(use --oci-layout {store}=<path>)"
            )

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for data in read_blob(self.session.channel, f"oci:{store}", digest):
                    yield data
            except KeyError:
                raise UserError(
                    f"OCI layout {store}: blob {digest} is not there (or the client does not "
                    f"share {store!r}: --oci-layout {store}=<path>)"
                ) from None

        yield chunks()

    # -- secrets and SSH --------------------------------------------------------------------

    async def secret(self, id: str) -> bytes:
        stub = self.session.channel.unary_unary(
            SECRETS,
            request_serializer=secrets_pb2.GetSecretRequest.SerializeToString,
            response_deserializer=secrets_pb2.GetSecretResponse.FromString,
        )
        try:
            answer: secrets_pb2.GetSecretResponse = await stub(secrets_pb2.GetSecretRequest(ID=id))
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise UserError(
                    f"secret {id!r} was not provided (use --secret id={id},src=…)"
                ) from None
            raise UserError(f"secret {id!r}: {_said(err)}") from None
        return answer.data

    async def ssh_agent(self, id: str) -> Path:
        written, id = id, id or "default"
        if id in self._agents:
            return self._agents[id]
        check = self.session.channel.unary_unary(
            SSH_CHECK,
            request_serializer=ssh_pb2.CheckAgentRequest.SerializeToString,
            response_deserializer=ssh_pb2.CheckAgentResponse.FromString,
        )
        try:
            await check(ssh_pb2.CheckAgentRequest(ID=id))
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                # UNIMPLEMENTED: the client forwards no agent at all
                forwarded = err.code() == grpc.StatusCode.NOT_FOUND
                raise UserError(no_ssh_agent(written, forwarded=forwarded)) from None
            raise UserError(f"SSH agent {id!r}: {_said(err)}") from None
        path = await self._stack.enter_async_context(self._agent_socket(id))
        self._agents[id] = path
        return path

    @contextlib.asynccontextmanager
    async def _agent_socket(self, id: str) -> AsyncIterator[Path]:
        """A local agent socket whose every connection is forwarded to the client's agent."""
        forward = self.session.channel.stream_stream(
            SSH_FORWARD,
            request_serializer=ssh_pb2.BytesMessage.SerializeToString,
            response_deserializer=ssh_pb2.BytesMessage.FromString,
        )
        directory = Path(tempfile.mkdtemp(prefix="llbkit-ssh-", dir=self.scratch))
        # Only root passes the directory (runc binds the socket into the step, where its own
        # mode lets the step's user in): no other user of the daemon's host reaches the agent.
        directory.chmod(0o700)
        path = directory / "agent.sock"

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            call = forward(metadata=(("buildkit.ssh.id", id),))

            async def incoming() -> AsyncIterator[bytes]:
                async for message in call:
                    yield message.data

            async def send(data: bytes) -> None:
                await call.write(ssh_pb2.BytesMessage(data=data))

            try:
                await pump(incoming(), send, reader, writer)
            except grpc.aio.AioRpcError:
                pass  # the client's agent went away: this connection ends
            finally:
                call.cancel()

        server = await asyncio.start_unix_server(connected, path=str(path))
        path.chmod(0o777)
        try:
            yield path
        finally:
            server.close()
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                directory.rmdir()

    # -- registry credentials ---------------------------------------------------------------

    @property
    def shares_credentials(self) -> bool:
        """Whether the client answers for registry credentials (then only it does)."""
        return self.session.supports(AUTH)

    async def registry_credentials(self, host: str) -> tuple[str, str] | None:
        """The client's credentials for ``host`` (asked once per session), or ``None``."""
        if host in self._credentials:
            return self._credentials[host]
        ask = self.session.channel.unary_unary(
            AUTH,
            request_serializer=auth_pb2.CredentialsRequest.SerializeToString,
            response_deserializer=auth_pb2.CredentialsResponse.FromString,
        )
        try:
            answer: auth_pb2.CredentialsResponse = await ask(auth_pb2.CredentialsRequest(Host=host))
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise UserError(f"registry credentials for {host}: {_said(err)}") from None
            answer = auth_pb2.CredentialsResponse()
        found = (answer.Username, answer.Secret) if answer.Secret else None
        self._credentials[host] = found
        return found

    # -- local directories ------------------------------------------------------------------

    def local_identity(self, name: str) -> str:
        # As BuildKit keys its mirrors: by the directory's name and the session's shared key
        # (buildctl sends none, so its builds share one mirror per name and resync only what
        # changed). A mutual-TLS client's mirrors are its own: one certificate never syncs
        # into, or builds from, the files another certificate's client sent.
        peer = f"{self.session.peer}/" if self.session.peer else ""
        return f"session:{peer}{self.session.shared_key}:{name}"

    async def sync_local(
        self,
        name: str,
        dest: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> set[str]:
        from llbkit.core.session.diffcopy import receive_tree

        counted = None if progress is None else (lambda n, last: progress(n))

        self._require(FILE_SYNC, "local directories")
        metadata: list[tuple[str, str]] = [("dir-name", name)]
        metadata += [("include-patterns", p) for p in include]
        metadata += [("exclude-patterns", p) for p in exclude]
        metadata += [("followpaths", p) for p in follow_paths]
        batched = self.session.supports(BATCHED_FILE_SYNC)
        call: Any = self.session.channel.stream_stream(
            BATCHED_FILE_SYNC if batched else FILE_SYNC,
            request_serializer=None if batched else fsutil_pb2.Packet.SerializeToString,
            response_deserializer=(
                packets_pb2.Packets.FromString if batched else fsutil_pb2.Packet.FromString
            ),
        )(metadata=tuple(metadata))
        try:
            if batched:

                async def read() -> packets_pb2.Packets | None:
                    message: Any = await read_message(call)
                    return None if message is grpc.aio.EOF else message

                async with batched_packets(call.write, read) as packets:
                    changed = await receive_tree(packets, dest, progress=counted)
            else:
                changed = await receive_tree(_PacketCall(call), dest, progress=counted)
            await call.done_writing()
            return changed
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise UserError(
                    f"the build reads local directory {name!r}, which the client does not "
                    f"share (use --local {name}=<path>)"
                ) from None
            if err.code() == grpc.StatusCode.UNKNOWN:
                # The client's sender failed (a pattern it refuses, a file it cannot read):
                # said as fsutil's receiver says it, whether its ERR packet or its ending
                # status arrived first.
                raise UserError(f"error from sender: {_said(err)}") from None
            raise UserError(f"local directory {name!r}: {_said(err)}") from None
        except asyncio.InvalidStateError:  # a write after the call ended: why it ended
            raise UserError(f"local directory {name!r}: {await _ended(call)}") from None
        except BaseException:
            call.cancel()
            raise


def exporter_metadata(values: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """An exporter's response as FileSend metadata (``exporter-md-<key>``)."""
    return tuple(
        (EXPORTER_METADATA + key.lower(), value)
        for key, value in values.items()
        if re.fullmatch(r"[a-z0-9._-]+", key.lower())
    )
