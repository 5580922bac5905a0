"""A gRPC connection carried inside another one: the bytes of ``Control.Session``'s stream of
``BytesMessage`` joined to a local socket, so that grpcio (which has no custom transports)
speaks HTTP/2 over it as if over a socket. Both ends use it: the daemon dials its client's
services through it, the client serves them through it.

grpcio cannot adopt a listening socket either, so a socket handed over by systemd is served
by :func:`relay_listener`: each connection it accepts is spliced to a private unix socket the
gRPC server listens on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from llbkit.core.session.methods import MESSAGE_MAX

__all__ = ["BUFFER", "CHUNK", "private_socket", "pump", "relay_listener"]

#: the most bytes one message carries (an output of 160 MB in 32 KiB messages took 0.3 s more
#: to arrive)
CHUNK = MESSAGE_MAX
#: a socket reader's limit: it stops reading past twice this, so a read can take a whole
#: ``CHUNK`` (asyncio's default, 64 KiB, cut reads at a few hundred KiB)
BUFFER = CHUNK


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

    server = await asyncio.start_unix_server(accept, path=str(path), limit=BUFFER)
    try:
        yield str(path)
    finally:
        server.close()
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()


class _Half(asyncio.Protocol):
    """One end of a spliced connection. What it reads is written straight to its peer's
    transport, no task or stream buffer between; a peer that cannot keep up pauses this end's
    reading (so a relayed connection holds at most two transports' buffers), and end of file
    and closing pass through."""

    def __init__(self, peer: _Half | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.eof = False
        self.closed = False
        self.early: list[bytes] = []  # read before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def link(self, peer: _Half) -> None:
        """The peer is connected: hand it what came early, let bytes flow."""
        self.peer = peer
        assert peer.transport is not None and self.transport is not None
        for data in self.early:
            peer.transport.write(data)
        self.early.clear()
        if self.eof:
            peer.transport.write_eof()
        if self.closed:
            peer.transport.close()
        else:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return True  # passed on by link()
        if peer.eof:  # both ways are done
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True
        peer.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if exc is None:
                peer.transport.close()  # after what is buffered for it
            else:
                peer.transport.abort()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.resume_reading()


class _Accepted(_Half):
    """A connection accepted on the relayed listener; dials the target when it arrives."""

    def __init__(self, target: str, dialling: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self.target = target
        self.dialling = dialling

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.dial())
        self.dialling.add(task)
        task.add_done_callback(self.dialling.discard)

    async def dial(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, inner = await loop.create_unix_connection(lambda: _Half(self), self.target)
        except OSError:
            self.transport.abort()  # the server behind is gone (stopping)
            return
        self.link(inner)


async def relay_listener(listening: socket.socket, target: str) -> asyncio.Server:
    """Accept on ``listening`` (any stream socket: unix, TCP) and splice every connection to
    the unix socket ``target``; returns the server (close it to stop accepting, which closes
    ``listening``)."""
    loop = asyncio.get_running_loop()
    dialling: set[asyncio.Task[None]] = set()
    return await loop.create_server(lambda: _Accepted(target, dialling), sock=listening)
