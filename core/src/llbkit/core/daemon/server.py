"""The daemon's life: open the engine on its root, listen, serve, and on the way out cancel
what runs and release the root. Started by systemd, it serves the sockets handed over
(``fd://``) and says when it is ready (``Type=notify``)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import grpc

from llbkit.core.api._pb import control_pb2, gateway_pb2_grpc
from llbkit.core.api.protowire import bytes_message, bytes_message_data
from llbkit.core.config import EngineConfig
from llbkit.core.daemon.gateway import Forwarders, GatewayService
from llbkit.core.daemon.listen import Activated, Address, TLSFiles, prepare_unix, secure_unix
from llbkit.core.daemon.service import ControlService
from llbkit.core.daemon.sessions import MESSAGE_BYTES, SessionManager
from llbkit.core.errors import ConfigError
from llbkit.core.session.relay import relay_listener

if TYPE_CHECKING:
    from llbkit.core.control import Controller

__all__ = ["Daemon"]

#: seconds a stopping daemon gives running calls before cancelling them
GRACE = 5.0


class _Log(grpc.aio.ServerInterceptor):
    """``--debug``: one line per call."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        click.echo(f"llbkitd: {time.strftime('%H:%M:%S')} {handler_call_details.method}", err=True)
        return await continuation(handler_call_details)


def _notify(where: str, state: str) -> None:
    """sd_notify(3): one datagram to systemd's ``$NOTIFY_SOCKET`` (``@`` for the abstract
    namespace); a systemd that is not listening is not an error."""
    if not where:
        return
    target = "\0" + where[1:] if where.startswith("@") else where
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.connect(target)
        sock.sendall(state.encode())


@contextlib.contextmanager
def _private_ports(
    server: grpc.aio.Server, sockets: Sequence[Activated], tls: TLSFiles | None, tmp: Path
) -> Iterator[list[str]]:
    """grpcio cannot serve a socket it did not open: for each socket systemd passed, the gRPC
    server listens on a private unix socket (in a fresh 0700 directory), to which the caller
    splices every connection accepted on the passed socket once gRPC serves. TCP sockets get
    mutual TLS there, as a ``tcp://`` address would. Yields the private sockets' paths."""
    if not sockets:
        yield []
        return
    # A unix socket's path is at most 107 bytes: a deep root falls back to the temp directory.
    base = tmp if len(str(tmp)) < 64 else None
    directory = Path(tempfile.mkdtemp(prefix="llbkitd-fd-", dir=base))
    os.chmod(directory, 0o700)
    paths = [directory / str(passed.fd) for passed in sockets]
    try:
        for passed, path in zip(sockets, paths, strict=True):
            if passed.tcp and tls is not None:
                server.add_secure_port(f"unix:{path}", tls.credentials())
                continue
            if passed.tcp:
                click.echo(
                    f"llbkitd: warning: {passed.text} is plain TCP without TLS: anyone who "
                    "reaches it can run builds as this daemon's user",
                    err=True,
                )
            server.add_insecure_port(f"unix:{path}")
        yield [str(path) for path in paths]
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()


class Daemon:
    """llbkitd's parts, started by :meth:`running`."""

    def __init__(
        self,
        *,
        root: Path,
        config: EngineConfig,
        addresses: Sequence[Address],
        activated: Sequence[Activated] = (),
        tls: TLSFiles | None = None,
        group: str = "",
        debug: bool = False,
    ) -> None:
        self.root = root
        self.config = config
        self.addresses = list(addresses)
        self.activated = list(activated)
        self.tls = tls
        self.group = group
        self.debug = debug

    def _listen(self, server: grpc.aio.Server) -> list[str]:
        """Add the unix and TCP addresses to ``server``; the unix sockets' paths."""
        unix = []
        for address in self.addresses:
            if address.scheme == "unix":
                prepare_unix(address.target)
                server.add_insecure_port(f"unix:{address.target}")
                unix.append(address.target)
            elif address.scheme == "fd":
                continue  # served through relays, once the server runs
            elif self.tls is not None:
                server.add_secure_port(address.target, self.tls.credentials())
            else:
                click.echo(
                    f"llbkitd: warning: {address.text} is plain TCP without TLS: anyone "
                    "who reaches it can run builds as this daemon's user",
                    err=True,
                )
                server.add_insecure_port(address.target)
        return unix

    def _controller(self) -> Controller:
        """The engine this daemon serves, set up as a daemon's (see the comments)."""
        from llbkit.core.control import Controller
        from llbkit.core.plugins.registry import PluginRegistry
        from llbkit.core.registry.connections import ConnectionPool

        registry = PluginRegistry.from_env()
        for warning in registry.warnings:
            click.echo(f"llbkitd: warning: {warning}", err=True)
        controller = Controller.open(self.root, self.config, registry, registry.hook_manager())
        # Clients get their answer first; garbage is collected after it, as buildkitd does.
        controller.gc_after_answer = lambda err: click.echo(
            f"llbkitd: warning: garbage collection failed: {err}", err=True
        )
        # Registry connections stay open between builds: a warm build does no new handshake.
        controller.connections = ConnectionPool()
        return controller

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        controller = self._controller()
        connections = controller.connections
        try:
            # The worker starts now: what a killed daemon left running is stopped before any
            # client is served, and the first build does not wait for it.
            reaped = await controller.drivers.reap_orphans()
            await controller.drivers.executor()
            if reaped:
                click.echo(
                    f"llbkitd: stopped {len(reaped)} container(s) a killed daemon left running: "
                    + ", ".join(reaped),
                    err=True,
                )
            if controller.store.root.recovered:
                click.echo(
                    "llbkitd: cleaned up what a killed daemon left: "
                    + ", ".join(controller.store.root.recovered),
                    err=True,
                )
            server = grpc.aio.server(
                interceptors=[_Log()] if self.debug else [],
                options=[
                    ("grpc.max_receive_message_length", MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MESSAGE_BYTES),
                    # A client whose machine vanished (no FIN) is found within a minute: its
                    # calls are cancelled, so its build, lease and locks are let go.
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 20_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ],
            )
            sessions = SessionManager(Path(controller.store.tmp))
            forwarders = Forwarders()
            _add_control(server, ControlService(controller, sessions, forwarders))
            gateway_pb2_grpc.add_LLBBridgeServicer_to_server(  # type: ignore[no-untyped-call]
                GatewayService(controller, forwarders), server
            )
            unix = self._listen(server)
            # systemd's, read once: builds must not see it (runc would take it for its own).
            notify = os.environ.pop("NOTIFY_SOCKET", "")
            tmp = Path(controller.store.tmp)
            with _private_ports(server, self.activated, self.tls, tmp) as private:
                # The sockets are born 0600 (then opened to the group): no moment when
                # anyone could connect before their mode is set.
                previous = os.umask(0o177)
                try:
                    await server.start()
                except RuntimeError as err:  # grpcio's "cannot bind": an address in use
                    raise ConfigError(
                        f"cannot listen on {', '.join(a.text for a in self.addresses)}: {err}"
                    ) from None
                finally:
                    os.umask(previous)
                # Only now: a connection that waited in a passed socket's backlog while the
                # daemon started finds gRPC serving behind the relay.
                relays = [
                    await relay_listener(passed.sock, path)
                    for passed, path in zip(self.activated, private, strict=True)
                ]
                for path in unix:
                    secure_unix(
                        path, uid=self.config.grpc.uid, gid=self.config.grpc.gid, group=self.group
                    )
                shown = ", ".join(
                    [a.text for a in self.addresses if a.scheme != "fd"]
                    + [passed.text for passed in self.activated]
                )
                click.echo(f"llbkitd: serving {self.root} on {shown}", err=True)
                sys.stderr.flush()
                _notify(notify, f"READY=1\nMAINPID={os.getpid()}")
                try:
                    yield
                finally:
                    _notify(notify, "STOPPING=1")
                    for relay in relays:
                        relay.close()  # no new connections; systemd keeps the socket
                    await server.stop(GRACE)
                    for relay in relays:
                        await relay.wait_closed()
                    for path in unix:
                        with contextlib.suppress(OSError):
                            Path(path).unlink()
        finally:
            try:
                if connections is not None:
                    await connections.aclose()
            finally:
                await controller.aclose()


_KINDS: dict[tuple[bool, bool], Any] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _add_control(server: grpc.aio.Server, servicer: ControlService) -> None:
    """``Control``'s methods, registered as the generated ``add_ControlServicer_to_server``
    registers them (from the same descriptor), except that ``Session``'s messages reach the
    servicer and leave it as their bytes: that stream carries every byte of a client's
    contexts and outputs, and the protobuf runtime would copy each twice (1 ms a MiB)."""
    from google.protobuf.message_factory import GetMessageClass

    service = control_pb2.DESCRIPTOR.services_by_name["Control"]
    handlers: dict[str, Any] = {}
    for method in service.methods:
        make = _KINDS[method.client_streaming, method.server_streaming]
        if method.name == "Session":
            handlers[method.name] = make(
                servicer.Session,
                request_deserializer=bytes_message_data,
                response_serializer=bytes_message,
            )
            continue
        request = GetMessageClass(method.input_type)
        response = GetMessageClass(method.output_type)
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
