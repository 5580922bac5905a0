"""A build context that is a URL (``--opt context=URL``): the archive is downloaded once per
build, however many solves of the build read it (the frontend's, for the Dockerfile and its
ignore file, then the build's), as BuildKit's job shares a vertex between them."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.hostile.cli import llbkit

pytestmark = pytest.mark.root


def _archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in {"Dockerfile": b"FROM scratch\nCOPY . /got/\n", "a.txt": b"a\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@contextmanager
def _serving(body: bytes) -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_an_archive_context_is_downloaded_once_per_build(tmp_path: Path) -> None:
    with _serving(_archive()) as (url, asked):
        done = llbkit(
            tmp_path / "root",
            "build",
            *["--progress", "plain", "--frontend", "dockerfile.v0"],
            *["--opt", f"context={url}/ctx.tar.gz"],
            *["--output", f"type=local,dest={tmp_path / 'out'}"],
        )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "got" / "a.txt").read_text() == "a\n"
    assert (tmp_path / "out" / "got" / "Dockerfile").is_file()
    assert asked == ["/ctx.tar.gz"]
    # One step for the download, shown once.
    assert done.stderr.count("[internal] load remote build context\n") == 1
