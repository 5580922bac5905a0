"""What a Dockerfile case is compared on: the tree and the image config (without times)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUILD_ARGS = {"FROMCLI": "cli"}
#: where the vectors' cases downloaded from (history shows the URL)
URL_PORT = 5056
SECRETS = {"token": "vector-secret-value"}
KEEP = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
)


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """The image config's fields users rely on, and history without timestamps."""
    inner = config.get("config") or {}
    return {
        "config": {k: inner[k] for k in KEEP if inner.get(k) not in (None, [], {})},
        "history": [
            {k: h[k] for k in ("created_by", "empty_layer", "comment") if h.get(k) is not None}
            for h in config.get("history") or []
        ],
        "author": config.get("author"),
    }


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


#: the Last-Modified time of every served file (a checkout does not keep file times)
SERVED_MTIME = 1_577_934_245


@contextmanager
def serve(root: Path, port: int = 0) -> Iterator[str]:
    """Serve ``root`` over HTTP on loopback; yield the base URL. Files under ``*/served/`` get
    a fixed time first, so downloads (which keep Last-Modified) are the same everywhere."""
    import os

    for path in root.glob("*/served/**/*"):
        if path.is_file():
            os.utime(path, (SERVED_MTIME, SERVED_MTIME))
    import functools
    import http.server
    import threading

    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


class _Quiet(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass
