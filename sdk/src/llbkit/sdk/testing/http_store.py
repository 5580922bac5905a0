"""A small HTTP object store on loopback, for cache backends' tests: ``GET``, ``PUT`` and
``HEAD`` on paths under a directory, a bearer token if asked, and failures on demand."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["HttpStore"]


@dataclass
class HttpStore:
    """Serve ``root`` on ``127.0.0.1``; use as a context manager, ``url`` is its base.

    :param token: when set, requests without ``Authorization: Bearer <token>`` get 401.
    :param fail_every: when set, every n-th request gets a 503 (a flaky server).
    :param truncate_blobs: a blob's ``GET`` announces its whole length and sends half of it.
    :param stall: seconds every ``GET`` of a blob waits before answering (past a timeout).
    """

    root: Path
    token: str = ""
    fail_every: int = 0
    truncate_blobs: bool = False
    stall: float = 0.0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HttpStore:
        self.root.mkdir(parents=True, exist_ok=True)
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _path(self) -> Path | None:
                rel = self.path.split("?", 1)[0].lstrip("/")
                target = (store.root / rel).resolve()
                return target if target.is_relative_to(store.root.resolve()) else None

            def _refused(self) -> bool:
                with store._lock:
                    store._count += 1
                    flaky = store.fail_every and store._count % store.fail_every == 0
                code = 0
                if store.token and self.headers.get("Authorization") != f"Bearer {store.token}":
                    code = 401
                elif flaky:
                    code = 503
                if code:
                    self._answer(code)
                return bool(code)

            def _answer(self, code: int, body: bytes = b"") -> None:
                store.requests.append((self.command, self.path, code))
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                if self._refused():
                    return
                path = self._path()
                if path is None or not path.is_file():
                    self._answer(404)
                    return
                data = path.read_bytes()
                blob = "/blobs/" in self.path and self.command == "GET"
                if blob and store.stall:
                    time.sleep(store.stall)
                store.requests.append((self.command, self.path, 200))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    # A truncating server cuts the connection half way through a blob.
                    self.wfile.write(
                        data[: len(data) // 2] if blob and store.truncate_blobs else data
                    )
                    if blob and store.truncate_blobs:
                        self.close_connection = True

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                if self._refused():
                    return
                path = self._path()
                if path is None:
                    self._answer(400)
                    return
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)  # whole or not at all, as object stores are
                self._answer(201)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
