"""Fixtures shared by the session tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llbkit.core.remote.lite import h2
from llbkit.core.remote.lite.rpc import serve

#: (client, server, the client's end of the socket pair)
Ends = tuple[h2.Connection, h2.Connection, socket.socket]
Connected = Callable[[dict[str, Any]], contextlib.AbstractContextManager[Ends]]


@contextlib.contextmanager
def _connected(handlers: dict[str, Any]) -> Iterator[Ends]:
    ours, theirs = socket.socketpair()
    server = h2.Connection(
        lambda: theirs.recv(1 << 16), theirs.sendall, server=True, on_stream=serve(handlers)
    )
    client = h2.Connection(lambda: ours.recv(1 << 16), ours.sendall)
    try:
        yield client, server, ours
    finally:
        client.close()
        server.close()
        ours.close()
        theirs.close()


@pytest.fixture
def lite_connected() -> Connected:
    """A light client's connection to a server of ``handlers`` over a socket pair (and the
    server's connection, and the client's end of the pair, to cut it)."""
    return _connected
