"""A TCP relay that counts connections: how many a client opens to a server behind it."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class CountingRelay:
    """A TCP relay to ``upstream`` that counts the connections made through it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rsplit(":", 1)
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(2)

    def close(self) -> None:
        self._listener.close()
