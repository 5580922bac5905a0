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
