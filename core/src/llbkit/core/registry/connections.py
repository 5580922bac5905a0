"""HTTP connections to registries: shared by the clients of one build, and kept between builds
by a daemon, as the Go transport of buildkitd keeps them.

A build's clients (the frontend's resolution, the pulls, an export's pushes) share one
:class:`~llbkit.core.registry.http.Pool`, so a cold build opens one connection per registry.
Within a daemon, that pool is a :class:`ConnectionPool` that outlives the build: a warm build
through ``llbkitd`` pays no new TCP or TLS handshake. Nothing on a kept socket outlives a
request but the connection (no cookies are kept, as Go's client keeps none).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llbkit.core.registry.http import KEEPALIVE, Client, Pool

if TYPE_CHECKING:
    import ssl

__all__ = ["ConnectionPool", "build_client", "shared_connections"]


class ConnectionPool(Pool):
    """Open registry connections kept between builds, on the one event loop that first uses
    the pool (a daemon's); closed by :meth:`aclose`."""

    def __init__(self, keepalive: float = KEEPALIVE) -> None:
        super().__init__(keepalive)
        self._loop: asyncio.AbstractEventLoop | None = None

    def usable(self) -> bool:
        """Whether this event loop may use the pool: its sockets are the first user's loop's."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        return loop is self._loop


@dataclass
class _Block:
    pool: Pool
    owned: bool
    clients: dict[tuple[object, float], Client] = field(default_factory=dict)


_BLOCK: ContextVar[_Block | None] = ContextVar("llbkit_registry_connections", default=None)


@asynccontextmanager
async def shared_connections(pool: ConnectionPool | None = None) -> AsyncIterator[None]:
    """Within the block (a build), registry clients share their connections; with ``pool``,
    they are its connections, which stay open when the block ends."""
    import anyio

    block = _Block(pool, False) if pool is not None and pool.usable() else _Block(Pool(), True)
    token = _BLOCK.set(block)
    try:
        yield
    finally:
        _BLOCK.reset(token)
        if block.owned:
            with anyio.CancelScope(shield=True):
                await block.pool.aclose()


def build_client(verify: ssl.SSLContext | bool, timeout: float) -> tuple[Client, bool]:
    """The HTTP client a registry client uses, and whether it owns it (must close it): on the
    block's connections when within :func:`shared_connections`, else on its own. ``verify``
    ``True`` trusts the machine's CAs, as buildkitd does."""
    block = _BLOCK.get()
    if block is None:
        return Client(verify, timeout), True
    # A context is its own key (by identity): held by the client, so its id is never reused.
    key = (verify, timeout)
    found = block.clients.get(key)
    if found is None:
        found = block.clients[key] = Client(verify, timeout, block.pool)
    return found, False
