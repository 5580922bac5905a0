"""What a Dockerfile case is compared on: the tree and the image config (without times)."""

from __future__ import annotations

import json
from typing import Any

BUILD_ARGS = {"FROMCLI": "cli"}
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
