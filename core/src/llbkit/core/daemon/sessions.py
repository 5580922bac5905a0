"""The daemon's sessions: each client's ``Control.Session`` stream becomes a gRPC channel to
the services the client exposes, found by the session id a ``SolveRequest`` names."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import grpc

from llbkit.core.errors import UserError
from llbkit.core.session.caller import Session
from llbkit.core.session.relay import private_socket, pump

__all__ = ["SessionManager"]

HEADER_ID = "x-docker-expose-session-uuid"
HEADER_NAME = "x-docker-expose-session-name"
HEADER_KEY = "x-docker-expose-session-sharedkey"
HEADER_METHOD = "x-docker-expose-session-grpc-method"
#: how long a Solve waits for the session it names to arrive (BuildKit: until it comes)
ARRIVAL = 30.0
#: how long calls on a session whose client went have to fail on their own before the
#: channel cancels them
CLOSING = 5.0
#: as buildkitd's: a session may carry large messages (a definition, a file chunk)
MESSAGE_BYTES = 16 << 20


class SessionManager:
    """Sessions by id, while their streams last."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._sessions: dict[str, Session] = {}
        self._changed = asyncio.Condition()

    async def handle(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        incoming: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> None:
        """Serve one ``Control.Session`` stream until either side ends it."""
        headers: dict[str, list[str]] = {}
        for key, value in metadata:
            text = value.decode() if isinstance(value, bytes) else value
            headers.setdefault(key.lower(), []).append(text)
        session_id = (headers.get(HEADER_ID) or [""])[0]
        if not session_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no {HEADER_ID} header")
        previous = self._sessions.get(session_id)
        if previous is not None and not previous.closed.is_set():
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} is already open"
            )
        finished = asyncio.Event()
        private: list[asyncio.StreamWriter] = []

        async def send(chunk: bytes) -> None:
            try:
                await context.write(chunk)
            except Exception as err:  # grpc's own types say the client ended the stream
                raise ConnectionResetError(f"the client ended the session: {err}") from None

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            private.append(writer)
            try:
                await pump(incoming, send, reader, writer)
            finally:
                finished.set()

        self.run_dir.mkdir(parents=True, exist_ok=True)
        async with private_socket(connected, self.run_dir) as path:
            channel = grpc.aio.insecure_channel(
                f"unix:{path}",
                options=[
                    ("grpc.max_receive_message_length", MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MESSAGE_BYTES),
                ],
            )
            session = Session(
                session_id,
                (headers.get(HEADER_NAME) or [""])[0],
                (headers.get(HEADER_KEY) or [""])[0],
                frozenset(m.lower() for m in headers.get(HEADER_METHOD, [])),
                channel,
                peer=peer_identity(context.auth_context()),
            )
            async with self._changed:
                previous = self._sessions.get(session_id)
                if previous is not None and not previous.closed.is_set():
                    await context.abort(
                        grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} is already open"
                    )
                self._sessions[session_id] = session
                self._changed.notify_all()
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    # Dial now: the stream starts carrying the connection at once.
                    await asyncio.wait_for(channel.channel_ready(), timeout=ARRIVAL)
                await finished.wait()
            finally:
                session.closed.set()
                async with self._changed:
                    if self._sessions.get(session_id) is session:
                        del self._sessions[session_id]
                # The connection goes first: the calls on it fail as calls whose peer went
                # (what their callers report), not canceled (which a task group would take
                # for its own cancellation, and a build's answer would never be sent).
                for writer in private:
                    writer.close()
                await channel.close(grace=CLOSING)

    async def get(self, session_id: str, timeout: float = ARRIVAL) -> Session:
        """The open session ``session_id``, waiting for it to arrive (a client opens it beside
        its Solve, in any order)."""

        async def arrived() -> Session:
            async with self._changed:
                while True:
                    found = self._sessions.get(session_id)
                    if found is not None and not found.closed.is_set():
                        return found
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            raise UserError(f"no active session for {session_id}: the client is gone") from None


def peer_identity(auth: Mapping[str, Iterable[bytes]]) -> str:
    """Who is at the other end, as far as the transport proves it: the client certificate
    of a mutual-TLS connection (its SHA-256), or "" on the unix socket, whose users the
    daemon trusts as buildkitd trusts its socket's (root and the socket's group)."""
    for certificate in auth.get("x509_pem_cert") or ():
        return "tls-" + hashlib.sha256(certificate).hexdigest()[:32]
    return ""
