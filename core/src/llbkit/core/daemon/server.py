"""The daemon's life: open the engine on its root, listen, serve, and on the way out cancel
what runs and release the root."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import click
import grpc

from llbkit.core.api._pb import control_pb2_grpc, gateway_pb2_grpc
from llbkit.core.config import EngineConfig
from llbkit.core.daemon.gateway import Forwarders, GatewayService
from llbkit.core.daemon.listen import Address, TLSFiles, prepare_unix, secure_unix
from llbkit.core.daemon.service import ControlService
from llbkit.core.daemon.sessions import MESSAGE_BYTES, SessionManager

__all__ = ["Daemon"]

#: seconds a stopping daemon gives running calls before cancelling them
GRACE = 5.0


class _Log(grpc.aio.ServerInterceptor):
    """``--debug``: one line per call."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        click.echo(f"llbkitd: {time.strftime('%H:%M:%S')} {handler_call_details.method}", err=True)
        return await continuation(handler_call_details)


class Daemon:
    """llbkitd's parts, started by :meth:`running`."""

    def __init__(
        self,
        *,
        root: Path,
        config: EngineConfig,
        addresses: Sequence[Address],
        tls: TLSFiles | None = None,
        group: str = "",
        debug: bool = False,
    ) -> None:
        self.root = root
        self.config = config
        self.addresses = list(addresses)
        self.tls = tls
        self.group = group
        self.debug = debug

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from llbkit.core.control import Controller
        from llbkit.core.plugins.registry import PluginRegistry

        registry = PluginRegistry.from_env()
        for warning in registry.warnings:
            click.echo(f"llbkitd: warning: {warning}", err=True)
        controller = Controller.open(self.root, self.config, registry, registry.hook_manager())
        try:
            # The worker starts now: what a killed daemon left running is stopped before any
            # client is served, and the first build does not wait for it.
            await controller.drivers.executor()
            server = grpc.aio.server(
                interceptors=[_Log()] if self.debug else [],
                options=[
                    ("grpc.max_receive_message_length", MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MESSAGE_BYTES),
                ],
            )
            sessions = SessionManager(Path(controller.store.tmp))
            forwarders = Forwarders()
            control_pb2_grpc.add_ControlServicer_to_server(  # type: ignore[no-untyped-call]
                ControlService(controller, sessions, forwarders), server
            )
            gateway_pb2_grpc.add_LLBBridgeServicer_to_server(  # type: ignore[no-untyped-call]
                GatewayService(controller, forwarders), server
            )
            unix = []
            for address in self.addresses:
                if address.scheme == "unix":
                    prepare_unix(address.target)
                    server.add_insecure_port(f"unix:{address.target}")
                    unix.append(address.target)
                elif self.tls is not None:
                    server.add_secure_port(address.target, self.tls.credentials())
                else:
                    click.echo(
                        f"llbkitd: warning: {address.text} is plain TCP without TLS: anyone "
                        "who reaches it can run builds as this daemon's user",
                        err=True,
                    )
                    server.add_insecure_port(address.target)
            await server.start()
            for path in unix:
                secure_unix(
                    path, uid=self.config.grpc.uid, gid=self.config.grpc.gid, group=self.group
                )
            shown = ", ".join(a.text for a in self.addresses)
            click.echo(f"llbkitd: serving {self.root} on {shown}", err=True)
            sys.stderr.flush()
            try:
                yield
            finally:
                await server.stop(GRACE)
                for path in unix:
                    with contextlib.suppress(OSError):
                        Path(path).unlink()
        finally:
            await controller.aclose()
