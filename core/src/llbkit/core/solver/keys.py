"""Cache keys: deterministic, portable, and kept with the record of what went into them.

A vertex's definition key hashes its op (normalized by the op's class, as BuildKit normalizes
ops for caching) with its inputs' keys and selectors. Where an op reads content from an input
(a copy's source), a second key replaces that input's key by the checksum of just the paths
read, so an unrelated change upstream still hits the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["key_digest", "result_key", "sha"]


def sha(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def key_digest(record: Mapping[str, Any]) -> str:
    """The key for a record of its parts (stored beside it, to explain a later miss)."""
    return sha(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def result_key(vertex_key: str, output: int) -> str:
    """The portable key of one output of a vertex."""
    return sha(f"{vertex_key}@{output}".encode())
