"""A frontend build on a daemon over a unix socket, without grpcio: ``Session`` (this machine's
directories and credentials served through it), ``Status`` and ``Solve``, as the full client
calls them, for the build that is asked most and whose start-up is most of its time."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from llbkit.core.remote.lite import messages
from llbkit.core.remote.lite.h2 import Connection, H2Error
from llbkit.core.remote.lite.rpc import Call, RpcError, serve
from llbkit.core.remote.lite.session import handlers, methods

if TYPE_CHECKING:
    from llbkit.core.plugins.progress import SolveStatus

__all__ = ["solve"]

CONTROL = "/moby.buildkit.v1.Control/"


def solve(
    address: str,
    socket_path: str,
    *,
    frontend: str,
    attrs: Mapping[str, str],
    locals_: Mapping[str, str],
    show: Callable[[SolveStatus], None] | None,
) -> list[bytes]:
    """Build; returns the raw status messages when ``show`` is None (decoded only if the
    build fails). Raises what the full client raises for a failed build."""
    from llbkit.core.errors import UserError

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError as err:
        sock.close()
        raise UserError(
            f"cannot reach the daemon at {address}: {err.strerror} (is llbkitd running there?)"
        ) from None
    conn = Connection(lambda: sock.recv(1 << 20), sock.sendall)
    try:
        return _solve(conn, address, frontend=frontend, attrs=attrs, locals_=locals_, show=show)
    finally:
        conn.close()
        sock.close()


def _solve(
    conn: Connection,
    address: str,
    *,
    frontend: str,
    attrs: Mapping[str, str],
    locals_: Mapping[str, str],
    show: Callable[[SolveStatus], None] | None,
) -> list[bytes]:
    from llbkit.core.control.request import new_ref
    from llbkit.core.errors import UserError

    ref = new_ref()
    session_id = os.urandom(16).hex()
    metadata = [
        ("x-docker-expose-session-uuid", session_id),
        ("x-docker-expose-session-name", "llbkit"),
        ("x-docker-expose-session-sharedkey", _shared_key(locals_)),
    ]
    metadata += [("x-docker-expose-session-grpc-method", m) for m in methods(locals_)]
    session = Call.start(conn, CONTROL + "Session", metadata)
    incoming = session.messages()

    def inner_read() -> bytes:
        try:
            return messages.bytes_message_data(next(incoming))
        except (StopIteration, RpcError, H2Error):
            return b""

    inner = Connection(
        inner_read,
        lambda data: session.send(messages.bytes_message(data)),
        server=True,
        on_stream=serve(handlers(locals_)),
    )
    status = Call.start(conn, CONTROL + "Status")
    status.send(messages.status_request(ref), end=True)
    raw: list[bytes] = []

    def follow() -> None:
        try:
            for message in status.messages():
                if show is None:
                    raw.append(message)
                else:
                    show(messages.status(message))
        except (RpcError, H2Error):
            return  # the build's own answer says what went wrong

    follower = threading.Thread(target=follow, name="status", daemon=True)
    follower.start()
    call = Call.start(conn, CONTROL + "Solve")
    request = messages.solve_request(ref, session_id, frontend=frontend, frontend_attrs=attrs)
    try:
        call.send(request, end=True)
        call.unary()
    except RpcError as err:
        follower.join(5)  # the failed build's last records (its error) first
        raise _failure(err, address, raw, show) from None
    except H2Error as err:
        raise UserError(f"the daemon at {address}: {err}") from None
    finally:
        inner.close()
    follower.join()
    session.stream.cancel()
    return raw


def _shared_key(locals_: Mapping[str, str]) -> str:
    """As the full client's: one key per machine, user and set of directories."""
    import hashlib

    dirs = sorted(f"{name}={os.path.realpath(path)}" for name, path in locals_.items())
    text = "\0".join([socket.gethostname(), str(os.getuid()), *dirs])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Failed(Exception):
    """A failed build, with what the display needs to say it as the full client does."""

    def __init__(self, error: Exception, raw: list[bytes]) -> None:
        super().__init__(str(error))
        self.error = error
        self.raw = raw


def _failure(
    err: RpcError, address: str, raw: list[bytes], show: Callable[[SolveStatus], None] | None
) -> Exception:
    """The failure as the full client raises it (``remote.controller``'s reading of the
    daemon's trailers), carried with the records not shown yet."""
    import json

    from llbkit.core.control.errdetails import STATUS_DETAILS, status_source
    from llbkit.core.errors import BuildFailed, FrontendFailed, UserError

    error: Exception
    said = "failed to solve: " + err.message
    found = err.metadata.get(STATUS_DETAILS, "")
    source = status_source(_unbase64(found)) if found else ""
    detail_text = err.metadata.get("llbkit-error-bin")
    if detail_text is not None:
        try:
            detail = json.loads(_unbase64(detail_text))
        except (ValueError, RecursionError):
            detail = {}
        kind = detail.get("kind") if isinstance(detail, dict) else None
        if kind == "build":
            error = BuildFailed(
                detail.get("name", ""), detail.get("reason", ""), detail.get("log_tail", []), source
            )
            if str(error) != said:
                error.args = (said,)
        elif kind == "frontend":
            error = FrontendFailed(said, source)
        else:
            error = UserError(said)
    elif source:
        error = FrontendFailed(said, source)
    elif err.code == 14:
        reason = err.message.rsplit(": ", 1)[-1].strip() or "unavailable"
        error = UserError(f"cannot reach the daemon at {address}: {reason}")
    else:
        error = UserError(err.message or "the build failed")
    return Failed(error, raw if show is None else [])


def _unbase64(text: str) -> bytes:
    """A ``-bin`` header's value (base64, padding optional, as HTTP/2 carries it)."""
    import base64

    return base64.b64decode(text + "=" * (-len(text) % 4))
