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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llbkit.core.cache.content import ContentStore
from llbkit.core.cache.db import SCHEMA_VERSION, NewerSchemaError, StateDB
from llbkit.core.errors import UserError
from llbkit.core.snapshot.mount import stale_mounts, unmount

__all__ = ["SCHEMA_VERSION", "StateRoot", "StateRootError", "default_root"]


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
    db: StateDB
    content: ContentStore
    _lock: IO[str]

    @classmethod
    def open(cls, path: Path) -> StateRoot:
        """Lock ``path`` for this process, create or upgrade it, and clean up after crashes.

        :raises StateRootError: another process holds it, it cannot be written, or it was
            written by a newer llbkit.
        """
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
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}")
            lock.flush()
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
        try:
            db = StateDB.open(path / "state.db")
        except NewerSchemaError as err:
            raise _newer(path, err) from None
        try:
            db.clear_leases()  # held by processes that have ended: this one owns the root now
            content = ContentStore(path / "content", tmp, db)
            content.recover()
        except BaseException:
            db.close()
            raise
        return cls(path, db, content, lock)

    def close(self) -> None:
        """Close the database and release the lock."""
        self.db.close()
        self._lock.close()

    def __enter__(self) -> StateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _newer(path: Path, err: NewerSchemaError) -> StateRootError:
    return StateRootError(
        f"state root {path} was written by a newer llbkit (schema {err.found}, this llbkit "
        f"knows {SCHEMA_VERSION}); upgrade llbkit or use another --root"
    )
