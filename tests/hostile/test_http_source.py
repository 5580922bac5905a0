"""A server that stalls or cuts a download short (``ADD https://…``): one line with a reason."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.core.sources import http
from llbkit.core.sources.http import parse_http
from tests.hostile.serving import serving


class _Bad(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 500)
        self.wfile.flush()
        if "stall" in self.path:
            time.sleep(5)
        # else: the connection closes 500 bytes short


@pytest.fixture
def server() -> Iterator[str]:
    with serving(_Bad) as host:
        yield f"http://{host}"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("stall", "download failed: no answer for 1s (ReadTimeout)"),
        ("short", "download failed: peer closed connection without sending complete message"),
    ],
)
def test_a_bad_download_is_one_line_with_a_reason(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, reason: str
) -> None:
    monkeypatch.setattr(http, "READ_TIMEOUT", 1.0)
    job = dataclasses.replace(parse_http(f"{server}/{path}", {}, None), state_dir=tmp_path)
    with pytest.raises(UserError) as err:
        anyio.run(job.cache_key, None)
    assert str(err.value).startswith(f"{server}/{path}: {reason}")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # the partial download is gone


class _Dated(BaseHTTPRequestHandler):
    """Answers with a ``Last-Modified`` under ``/dated``, and without one elsewhere."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.startswith("/dated"):
            self.send_header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.mark.parametrize(("path", "mtime"), [("dated", 784111777), ("undated", 0)])
def test_a_download_has_the_servers_time_or_the_epoch(
    tmp_path: Path, path: str, mtime: int
) -> None:
    """As BuildKit: ``Last-Modified`` when the server says it, else 1970 (never the time of
    the download, which would make every ``ADD`` of it a new layer)."""
    with serving(_Dated) as host:
        job = dataclasses.replace(parse_http(f"http://{host}/{path}", {}, None), state_dir=tmp_path)
        got, _, _, modified = anyio.run(job._download, None)
    assert bool(modified) == bool(mtime)
    assert got.stat().st_mtime == mtime
