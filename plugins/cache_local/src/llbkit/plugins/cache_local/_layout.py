"""Blocking file work on an OCI image layout, run in worker threads by the store.

Two promises rest on the order here: a file appears whole or not at all (written under a
temporary name, fsynced, renamed, its directory fsynced), and ``index.json`` changes only
under an exclusive ``flock`` of ``index.json.lock``, read-modify-write, so concurrent exports
into one directory never lose each other's entries.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any

from llbkit.core.errors import UserError

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def blob_path(root: Path, digest: str) -> Path:
    """Where a blob lives; the digest becomes a file name, so nothing else may pass."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_temp(path: Path) -> tuple[IO[bytes], Path]:
    """Open a new temporary file beside ``path``, to :func:`publish` or :func:`discard`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    return tmp.open("xb"), tmp


def publish(out: IO[bytes], tmp: Path, path: Path) -> None:
    """fsync the temporary file and rename it over ``path``, durably."""
    with out:
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def discard(out: IO[bytes], tmp: Path) -> None:
    """Drop a temporary file that will not be published: nothing is left behind."""
    out.close()
    tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    out, tmp = open_temp(path)
    try:
        out.write(data)
        publish(out, tmp, path)
    except BaseException:
        discard(out, tmp)
        raise


def ensure_layout(root: Path) -> None:
    """Write the ``oci-layout`` marker once; a layout without it is not a layout."""
    if not (root / "oci-layout").is_file():
        write_atomic(root / "oci-layout", LAYOUT)


def load_index(root: Path) -> dict[str, Any] | None:
    """``index.json`` as a dict, ``None`` when there is none; a broken one is the user's."""
    path = root / "index.json"
    try:
        index = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not JSON: {err}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise UserError(f"{path} is not an OCI image index")
    return index


def find_entry(root: Path, tag: str) -> dict[str, Any] | None:
    """The last manifest of ``index.json`` tagged ``tag`` (BuildKit keeps one per tag)."""
    index = load_index(root)
    if index is None:
        return None
    found = None
    for entry in index.get("manifests", []):
        if isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == tag:
            found = entry
    return found


def put_entry(root: Path, entry: dict[str, Any], tag: str) -> None:
    """Tag ``entry`` in ``index.json``, replacing the tag's previous entry, under the lock."""
    with (root / "index.json.lock").open("a") as lock:
        # Blocks until the other writer is done; released when the file closes.
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        index = load_index(root) or {}
        kept = [
            m
            for m in index.get("manifests", [])
            if not (isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == tag)
        ]
        index.setdefault("schemaVersion", 2)
        index.setdefault("mediaType", INDEX_MEDIA_TYPE)
        index["manifests"] = [*kept, entry]
        write_atomic(root / "index.json", json.dumps(index, indent=2).encode() + b"\n")
