"""HTTP connections to registries: shared by the clients of one build, and kept between builds
by a daemon, as the Go transport of buildkitd keeps them.

A build's clients (the frontend's resolution, the pulls, an export's pushes) share one
``httpx.AsyncClient`` per TLS setting and timeout, so a cold build opens one connection per
registry. Within a daemon, those clients are made on the transports of a :class:`ConnectionPool`
that outlives the build: a warm build through ``llbkitd`` pays no new TCP or TLS handshake.
Each build keeps its own ``AsyncClient`` (cookies are per build, never another client's);
only the sockets are shared, and nothing on them outlives a request but the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["ConnectionPool", "build_client", "shared_connections"]

#: how long an idle connection is kept: below the minute after which load balancers in front
#: of registries commonly drop one, so a kept connection is rarely one the server closed
KEEPALIVE = 30.0


class ConnectionPool:
    """Open registry connections kept between builds, on the one event loop that first uses
    the pool (a daemon's); closed by :meth:`aclose`."""

    def __init__(self, keepalive: float = KEEPALIVE) -> None:
        self.keepalive = keepalive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: dict[object, httpx.AsyncHTTPTransport] = {}

    def transport(self, verify: ssl.SSLContext | bool) -> httpx.AsyncBaseTransport | None:
        """The pool's transport for ``verify``, lent (a client's ``aclose`` leaves it open);
        None on another event loop than the pool's, whose sockets it cannot use."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            return None
        found = self._transports.get(verify)  # a context is its own key (by identity)
        if found is None:
            limits = httpx.Limits(keepalive_expiry=self.keepalive)
            found = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
            self._transports[verify] = found
        return _lent(found)

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()


def _lent(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncBaseTransport:
    import httpx

    class Lent(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await transport.handle_async_request(request)

        async def aclose(self) -> None:
            """The pool's connections stay open for the next build."""

    return Lent()


@dataclass
class _Block:
    pool: ConnectionPool | None
    clients: dict[tuple[int, object, float], httpx.AsyncClient] = field(default_factory=dict)


_BLOCK: ContextVar[_Block | None] = ContextVar("llbkit_registry_connections", default=None)


@asynccontextmanager
async def shared_connections(pool: ConnectionPool | None = None) -> AsyncIterator[None]:
    """Within the block (a build), registry clients share their HTTP clients; with ``pool``,
    those clients use its connections, which stay open when the block ends."""
    import anyio

    block = _Block(pool)
    token = _BLOCK.set(block)
    try:
        yield
    finally:
        _BLOCK.reset(token)
        with anyio.CancelScope(shield=True):
            for client in block.clients.values():
                await client.aclose()


def build_client(verify: ssl.SSLContext | bool, timeout: float) -> tuple[httpx.AsyncClient, bool]:
    """The HTTP client a registry client uses, and whether it owns it (must close it): the
    block's when within :func:`shared_connections`, else a new one of its own. ``verify``
    ``True`` trusts the machine's CAs, as buildkitd does."""
    import httpx

    from llbkit.core.registry.tls import system_context, trusting_hooks

    block = _BLOCK.get()
    # A context is its own key (by identity), as in the pool: held, so its id is never reused.
    key = (id(asyncio.get_running_loop()), verify, timeout)
    found = block.clients.get(key) if block is not None else None
    if found is None or found.is_closed:
        context = system_context() if verify is True else verify
        lent = block.pool.transport(context) if block is not None and block.pool else None
        found = httpx.AsyncClient(
            follow_redirects=True,
            timeout=timeout,
            verify=context,
            transport=lent,
            event_hooks=trusting_hooks(context),
        )
        if block is not None:
            block.clients[key] = found
    return found, block is None
