"""Opening a state root: one owning process (a lock), the database, and crash recovery.

Everything an engine keeps lives under one directory (``--root``, ``LLBKIT_ROOT``, by default
``/var/lib/llbkit`` as root and ``$XDG_DATA_HOME/llbkit`` otherwise). Opening it takes an
exclusive lock, so a second process gets one clear line instead of a corrupted store, and
removes what a killed process left half-written.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llbkit.core.cache.content import ContentStore
from llbkit.core.errors import UserError
from llbkit.core.snapshot.mount import stale_mounts, unmount

__all__ = ["SCHEMA_VERSION", "StateRoot", "StateRootError", "default_root"]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    size INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    usage_count INTEGER NOT NULL DEFAULT 0,
    record_type TEXT NOT NULL DEFAULT 'regular',
    description TEXT NOT NULL DEFAULT '',
    mutable INTEGER NOT NULL DEFAULT 0,
    whiteouts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS result_layers (
    result TEXT NOT NULL REFERENCES results(key) ON DELETE CASCADE,
    layer INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS result_layers_layer ON result_layers(layer);
CREATE INDEX IF NOT EXISTS result_layers_result ON result_layers(result);
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    result TEXT NOT NULL REFERENCES results(key) ON DELETE CASCADE,
    vertex_name TEXT NOT NULL DEFAULT '',
    explanation TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_result ON keys(result);
CREATE TABLE IF NOT EXISTS file_hashes (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (dev, ino, mtime, size)
);
CREATE TABLE IF NOT EXISTS flats (
    chain TEXT PRIMARY KEY,
    layer INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS flats_layer ON flats(layer);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    host TEXT NOT NULL,
    repo TEXT NOT NULL,
    PRIMARY KEY (digest, host, repo)
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    layer INTEGER NOT NULL,
    variant TEXT NOT NULL,
    digest TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (layer, variant)
);
"""


class StateRootError(UserError):
    """A state root that cannot be opened (in use, unwritable, from a newer llbkit)."""


def default_root(environ: dict[str, str] | None = None) -> Path:
    """``LLBKIT_ROOT``, else ``/var/lib/llbkit`` as root, else ``$XDG_DATA_HOME/llbkit``."""
    env = os.environ if environ is None else environ
    if env.get("LLBKIT_ROOT"):
        return Path(env["LLBKIT_ROOT"])
    if os.geteuid() == 0:
        return Path("/var/lib/llbkit")
    data = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "/"), ".local/share")
    return Path(data, "llbkit")


@dataclass
class StateRoot:
    """An opened state root; close it (or use ``with``) to release the lock."""

    path: Path
    db: sqlite3.Connection
    content: ContentStore
    _lock: IO[str]

    @classmethod
    def open(cls, path: Path) -> StateRoot:
        """Lock ``path`` for this process, create or upgrade it, and clean up after crashes.

        :raises StateRootError: another process holds it, it cannot be written, or it was
            written by a newer llbkit.
        """
        # Paths under the root reach runc's bundles and mount options, which a relative root
        # would resolve against another directory.
        path = path.absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock = open(path / "lock", "a+")  # noqa: SIM115 -- held for the root's lifetime
        except OSError as err:
            raise StateRootError(f"cannot use state root {path}: {err.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise StateRootError(
                f"state root {path} is in use by {holder}; wait for it to finish or use "
                "another --root"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            return cls._prepare(path, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _prepare(cls, path: Path, lock: IO[str]) -> StateRoot:
        tmp = path / "tmp"
        for point in stale_mounts(tmp):  # a killed process's overlay mounts
            unmount(point)
        shutil.rmtree(tmp, ignore_errors=True)  # staging of a process that died mid-write
        tmp.mkdir()
        db = sqlite3.connect(path / "state.db", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise StateRootError(
                f"state root {path} was written by a newer llbkit (schema {version}, this "
                f"llbkit knows {SCHEMA_VERSION}); upgrade llbkit or use another --root"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        content = ContentStore(path / "content", tmp, db)
        content.recover()
        return cls(path, db, content, lock)

    def close(self) -> None:
        """Close the database and release the lock."""
        self.db.close()
        self._lock.close()

    def __enter__(self) -> StateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
