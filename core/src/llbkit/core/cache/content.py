"""Blobs by digest: written whole or not at all, verified, and recorded only once on disk.

A blob is staged in the root's ``tmp/``, hashed while it is written, fsynced, renamed to
``content/sha256/<hex>`` and only then recorded in the database. A crash at any point leaves
either nothing or a complete file that :meth:`ContentStore.recover` records.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llbkit.core.cache.db import StateDB
from llbkit.core.errors import UserError
from llbkit.core.fs.durable import fsync_dir
from llbkit.core.llb.digest import is_digest

__all__ = ["BlobWriter", "ContentStore", "DigestMismatchError"]


class DigestMismatchError(UserError):
    """Content that does not hash to the digest it was announced with; nothing is kept."""


@dataclass
class BlobWriter:
    """Receives a blob's bytes; see :meth:`ContentStore.writer`."""

    _file: object
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: bytes) -> None:
        """Append bytes to the blob."""
        self._hash.update(data)
        self._file.write(data)  # type: ignore[attr-defined]
        self.size += len(data)

    @property
    def digest(self) -> str:
        """The digest of what was written so far."""
        return "sha256:" + self._hash.hexdigest()


class ContentStore:
    """The ``content/`` directory of a state root and its ``blobs`` table."""

    def __init__(self, path: Path, tmp: Path, db: StateDB) -> None:
        self.path = path
        self._tmp = tmp
        self._db = db
        if not db.readonly:
            (path / "sha256").mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it exists)."""
        if not is_digest(digest):
            raise UserError(f"not a sha256 digest: {digest!r}")
        return self.path / "sha256" / digest.split(":", 1)[1]

    def has(self, digest: str) -> bool:
        """Tell whether the blob is stored."""
        return self.blob_path(digest).exists()

    def size(self, digest: str) -> int:
        """The blob's size in bytes."""
        return self.blob_path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        """The whole blob (for small ones: configs, manifests, indexes)."""
        data = self.blob_path(digest).read_bytes()
        self.touch(digest)
        return data

    def touch(self, digest: str) -> None:
        """Record a use, for garbage collection's "least recently used"."""
        self._db.touch_blob(digest)

    @contextmanager
    def writer(self, expected: str | None = None, media_type: str = "") -> Iterator[BlobWriter]:
        """Write a blob; it becomes visible when the block ends without error.

        :param expected: the digest the content must have; a mismatch raises
            :class:`DigestMismatchError` and keeps nothing.
        """
        fd, staging = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = BlobWriter(handle)
                yield writer
                handle.flush()
                os.fsync(handle.fileno())
            digest = writer.digest
            if expected is not None and expected != digest:
                raise DigestMismatchError(
                    f"content announced as {expected} hashes to {digest} "
                    f"({writer.size} bytes); refused"
                )
            target = self.blob_path(digest)
            os.rename(staging, target)
            fsync_dir(target.parent)
            self._db.record_blob(digest, writer.size, media_type)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    def link_in(self, path: Path, digest: str, media_type: str = "") -> None:
        """Keep a verified file that lives elsewhere on this filesystem (hardlinked, or copied
        across filesystems) under ``digest``."""
        if self.has(digest):
            return
        fd, staging = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        os.close(fd)
        os.unlink(staging)
        try:
            os.link(path, staging)
        except OSError:
            shutil.copyfile(path, staging)
        self.adopt(Path(staging), digest, media_type)

    def adopt(self, path: Path, digest: str, media_type: str = "") -> None:
        """Move a finished file (written in ``tmp/``, whose digest the caller computed) in."""
        size = path.stat().st_size
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        target = self.blob_path(digest)
        os.rename(path, target)
        fsync_dir(target.parent)
        self._db.record_blob(digest, size, media_type)

    def put(self, data: bytes, media_type: str = "") -> str:
        """Store ``data``; returns its digest."""
        with self.writer(media_type=media_type) as w:
            w.write(data)
        return w.digest

    def delete(self, digest: str) -> None:
        """Forget the record first, then the file: a record never names a missing blob."""
        self._db.forget_blob(digest)
        self.blob_path(digest).unlink(missing_ok=True)

    def recover(self) -> None:
        """Reconcile records and files after a crash: drop records of missing files, record
        complete files that were renamed in but not yet recorded."""
        on_disk = {p.name: p for p in (self.path / "sha256").iterdir()}
        for digest in self._db.blob_digests():
            if digest.split(":", 1)[1] not in on_disk:
                self._db.forget_blob(digest)
        recorded = set(self._db.blob_digests())
        for name, path in on_disk.items():
            if f"sha256:{name}" not in recorded:
                self._db.record_blob(f"sha256:{name}", path.stat().st_size, "")

    def total_size(self) -> int:
        """Bytes used by all blobs."""
        return self._db.blobs_size()
