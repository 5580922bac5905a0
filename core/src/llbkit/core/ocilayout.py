"""The OCI image layout's names and its ``index.json``, as pure functions of bytes.

A public helper (``docs/plugins.md``): the ``type=local`` cache hands :func:`put_entry` to
``ClientDirectory.update``, which runs it under the ``index.json.lock`` BuildKit also takes, so
it must not do I/O of its own; a daemon's client applies the same entry to its own directory
from the build's response, as buildctl does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llbkit.core.errors import UserError

__all__ = [
    "DIGEST",
    "INDEX_MEDIA_TYPE",
    "LAYOUT",
    "REF_NAME",
    "blob_name",
    "find_entry",
    "parse_index",
    "put_entry",
]

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def blob_name(digest: str) -> str:
    """Where a blob lives; the digest becomes a file name, so nothing else may pass."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def parse_index(data: bytes, where: str) -> dict[str, Any]:
    """``index.json`` as a dict; a broken one is the user's, named by ``where``."""
    try:
        index = json.loads(data)
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise UserError(f"{where} is not JSON: {err}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise UserError(f"{where} is not an OCI image index")
    return index


def _tagged(entry: object, tag: str) -> bool:
    return isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == tag


def find_entry(index: dict[str, Any], tag: str) -> dict[str, Any] | None:
    """The last manifest of ``index`` tagged ``tag`` (BuildKit keeps one per tag)."""
    found = None
    for entry in index.get("manifests", []):
        if _tagged(entry, tag):
            found = entry
    return found


def put_entry(current: bytes | None, entry: dict[str, Any], tag: str, where: str) -> bytes:
    """``index.json`` with ``entry`` tagged ``tag``, replacing the tag's previous entry and
    keeping everything else."""
    index = parse_index(current, where) if current is not None else {}
    kept = [m for m in index.get("manifests", []) if not _tagged(m, tag)]
    index.setdefault("schemaVersion", 2)
    index.setdefault("mediaType", INDEX_MEDIA_TYPE)
    index["manifests"] = [*kept, entry]
    return json.dumps(index, indent=2).encode() + b"\n"
