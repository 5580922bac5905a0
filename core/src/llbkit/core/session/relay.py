"""A gRPC connection carried inside another one: the bytes of ``Control.Session``'s stream of
``BytesMessage`` joined to a local socket, so that grpcio (which has no custom transports)
speaks HTTP/2 over it as if over a socket. Both ends use it: the daemon dials its client's
services through it, the client serves them through it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

__all__ = ["CHUNK", "pump", "private_socket"]

#: bytes per message, as BuildKit's stream conn reads them
CHUNK = 32 * 1024


async def pump(
    incoming: AsyncIterator[bytes],
    send: Callable[[bytes], Awaitable[None]],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Move bytes both ways until either side ends: ``incoming`` into ``writer``, what
    ``reader`` gives out through ``send``."""

    async def inward() -> None:
        async for data in incoming:
            writer.write(data)
            await writer.drain()

    async def outward() -> None:
        while data := await reader.read(CHUNK):
            await send(data)

    tasks = [asyncio.ensure_future(inward()), asyncio.ensure_future(outward())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            # A peer that went away mid-write: the session is over, nothing to report.
            if failure is not None and not isinstance(failure, ConnectionError | OSError):
                raise failure
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def private_socket(
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    where: Path | None = None,
) -> AsyncIterator[str]:
    """A unix socket only this process may reach (in a fresh 0700 directory) that takes one
    connection, then disappears; yields its path. Nobody else can step into the session."""
    directory = Path(tempfile.mkdtemp(prefix="llbkit-session-", dir=where))
    os.chmod(directory, 0o700)
    path = directory / "s"
    taken = False

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal taken
        if taken:  # one connection per session, as BuildKit's dialer allows
            writer.close()
            return
        taken = True
        with contextlib.suppress(OSError):
            path.unlink()
        await on_connect(reader, writer)

    server = await asyncio.start_unix_server(accept, path=str(path))
    try:
        yield str(path)
    finally:
        server.close()
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
