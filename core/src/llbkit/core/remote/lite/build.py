"""A frontend build on a daemon over a unix socket, without grpcio: ``Session`` (this machine's
directories and credentials served through it), ``Status`` and ``Solve``, as the full client
calls them, for the build that is asked most and whose start-up is most of its time."""

from __future__ import annotations

import _socket  # not socket: its enums' import is a tenth of a build through a warm daemon
import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence

from llbkit.core.fs.archivefile import Held
from llbkit.core.remote.lite import messages
from llbkit.core.remote.lite.h2 import Connection, H2Error
from llbkit.core.remote.lite.rpc import (
    CODE_NAMES,
    Call,
    Handler,
    RpcError,
    serve,
)
from llbkit.core.remote.lite.session import PARTIAL, handlers, methods, warm_up
from llbkit.core.session.methods import shared_key

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["solve"]

CONTROL = "/moby.buildkit.v1.Control/"


def solve(
    address: str,
    socket_path: str,
    *,
    frontend: str,
    attrs: Mapping[str, str],
    locals_: Mapping[str, str],
    exporters: Sequence[tuple[str, Mapping[str, str]]] = (),
    cache_exports: Sequence[tuple[str, Mapping[str, str]]] = (),
    cache_imports: Sequence[tuple[str, Mapping[str, str]]] = (),
    entitlements: Sequence[str] = (),
    secrets: Mapping[str, bytes] | None = None,
    outputs: Sequence[tuple[str, bool] | None] = (),
    on_status: Callable[[bytes], None] | None,
) -> dict[str, str]:
    """Build; each ``StatusResponse`` goes to ``on_status`` undecoded (a record it cannot
    take is skipped); without ``on_status`` (quiet progress) none is asked for. Returns the
    exporters' response; raises what the full client raises for a failed build."""
    request = {
        "frontend": frontend,
        "frontend_attrs": attrs,
        "exporters": exporters,
        "cache_exports": cache_exports,
        "cache_imports": cache_imports,
        "entitlements": entitlements,
    }
    from llbkit.core.errors import UserError

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        conn = Connection(lambda: sock.recv(1 << 20), sock.sendall)
        try:
            held = Held(PARTIAL)  # archives received whole, placed if the build succeeds
            served = handlers(locals_, secrets, outputs, held)
            offered = methods(locals_, outputs)
            with held.settled(UserError):
                return _solve(
                    conn, request, locals_, served=served, offered=offered, on_status=on_status
                )
        finally:
            conn.close()
    except RpcError as err:
        raise _failure(err, address) from None
    except (H2Error, OSError) as err:
        reason = err.strerror or str(err) if isinstance(err, OSError) else str(err)
        raise UserError(
            f"cannot reach the daemon at {address}: {reason} (is llbkitd running there?)"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(_socket.SHUT_RDWR)  # the reader thread's recv ends with it
        sock.close()


def _solve(
    conn: Connection,
    request: dict[str, Any],
    locals_: Mapping[str, str],
    *,
    served: dict[str, Handler],
    offered: list[str],
    on_status: Callable[[bytes], None] | None,
) -> dict[str, str]:
    from llbkit.core.control.buildref import new_ref

    ref = new_ref()
    session_id = os.urandom(16).hex()
    metadata = [
        ("x-docker-expose-session-uuid", session_id),
        ("x-docker-expose-session-name", "llbkit"),
        ("x-docker-expose-session-sharedkey", shared_key(locals_)),
    ]
    metadata += [("x-docker-expose-session-grpc-method", m) for m in offered]
    session = Call.start(conn, CONTROL + "Session", metadata)
    incoming = session.messages()

    def inner_read() -> bytes:
        try:
            return messages.bytes_message_data(next(incoming))
        except (StopIteration, RpcError, H2Error, ValueError):
            return b""

    lost: list[str] = []

    def on_lost(why: str) -> None:
        # The daemon serves this build's files through the session: ended here, it must end
        # there too, or the build waits for files that never come.
        lost.append(why)
        with contextlib.suppress(H2Error):
            session.stream.cancel()

    inner = Connection(
        inner_read,
        lambda data: session.send(messages.bytes_message(data)),
        server=True,
        on_stream=serve(served),
        on_lost=on_lost,
    )
    follower = None if on_status is None else _follow(conn, ref, on_status)
    call = Call.start(conn, CONTROL + "Solve")
    try:
        call.send(messages.solve_request(ref, session_id, **request), end=True)
        warm_up(locals_)
        answer = call.unary()
    except RpcError as err:
        if follower is not None:
            follower.join(5)  # the failed build's last records (its error) first
        if lost:
            from llbkit.core.errors import UserError

            raise UserError(
                f"the build's session with the daemon ended: {lost[0]} (the daemon said: "
                f"{err.message})"
            ) from None
        raise
    finally:
        inner.close()
    if follower is not None:
        follower.join()
    session.stream.cancel()
    return messages.solve_response(answer)


def _follow(conn: Connection, ref: str, on_status: Callable[[bytes], None]) -> threading.Thread:
    """The build's ``Status`` stream, each record to ``on_status`` on a thread of its own."""
    status = Call.start(conn, CONTROL + "Status")
    status.send(messages.status_request(ref), end=True)

    def follow() -> None:
        try:
            for message in status.messages():
                with contextlib.suppress(Exception):  # one unreadable record: the rest still show
                    on_status(message)
        except (RpcError, H2Error):
            return  # the build's own answer says what went wrong

    follower = threading.Thread(target=follow, name="status", daemon=True)
    follower.start()
    return follower


def _failure(err: RpcError, address: str) -> Exception:
    """The failure as the full client raises it, from the same trailers."""
    from llbkit.core.control.errdetails import STATUS_DETAILS
    from llbkit.core.remote.failures import ERROR_DETAIL, failed_solve

    details, detail = err.metadata.get(STATUS_DETAILS), err.metadata.get(ERROR_DETAIL)
    named = CODE_NAMES[err.code] if 0 <= err.code < len(CODE_NAMES) else str(err.code)
    return failed_solve(
        err.message,
        address,
        code_name=named,
        status_details=_unbase64(details) if details else None,
        error_detail=_unbase64(detail) if detail is not None else None,
    )


def _unbase64(text: str) -> bytes:
    """A ``-bin`` header's value (base64, padding optional, as HTTP/2 carries it)."""
    import base64

    return base64.b64decode(text + "=" * (-len(text) % 4))
