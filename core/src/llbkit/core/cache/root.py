"""Opening a state root: one owning process (a lock), the database, and crash recovery.

Everything an engine keeps lives under one directory (``--root``, ``LLBKIT_ROOT``, by default
``/var/lib/llbkit`` as root and ``$XDG_DATA_HOME/llbkit`` otherwise). Opening it takes an
exclusive lock, so a second process gets one clear line (or waits, if it asks to) instead of a
corrupted store, and removes what a killed process left half-written. Readers that must not
wait open a read-only view instead, which takes no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from llbkit.core.cache.content import ContentStore
from llbkit.core.cache.db import SCHEMA_VERSION, NewerSchemaError, StateDB
from llbkit.core.errors import UserError
from llbkit.core.fs.iterative import rmtree
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
    """An opened state root; close it (or use ``with``) to release the lock.

    A view from :meth:`open_readonly` holds no lock and never writes (``readonly`` is true).
    """

    path: Path
    db: StateDB
    content: ContentStore
    _lock: IO[str] | None
    #: what opening the root cleaned up after a killed owner (``unmounted …``, ``removed …``)
    recovered: list[str] = field(default_factory=list)

    @property
    def readonly(self) -> bool:
        return self._lock is None

    @classmethod
    def open(cls, path: Path, *, wait: Callable[[str], None] | None = None) -> StateRoot:
        """Lock ``path`` for this process, create or upgrade it, and clean up after crashes.

        :param wait: when another process holds the root, called once with a line saying so,
            then the open blocks until the root is free. Ctrl-C interrupts the wait when it
            runs on the main thread (inside an event loop too). Without ``wait`` the open
            fails at once.
        :raises StateRootError: another process holds it (and ``wait`` is not given), it
            cannot be written, or it was written by a newer llbkit.
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
            _acquire(lock, path, wait)
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}")
            lock.flush()
            return cls._prepare(path, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def open_readonly(cls, path: Path) -> StateRoot:
        """A view of ``path`` for readers that must not wait (``du`` beside a build).

        It takes no lock and writes nothing: no recovery, no cleaning of ``tmp/``. It reads
        the last committed records while an owner writes, so a layer may vanish or appear
        between reading a record and reading its directory. A root that does not exist yet
        reads as empty.

        :raises StateRootError: it cannot be read, or it was written by a newer llbkit.
        """
        try:
            db = StateDB.open_readonly(path / "state.db")
        except NewerSchemaError as err:
            raise _newer(path, err) from None
        except sqlite3.Error as err:  # unreadable file or directory: the user's to fix
            raise StateRootError(f"cannot read state root {path}: {err}") from None
        return cls(path, db, ContentStore(path / "content", path / "tmp", db), None)

    @classmethod
    def _prepare(cls, path: Path, lock: IO[str]) -> StateRoot:
        tmp = path / "tmp"
        recovered = []
        for point in stale_mounts(tmp):  # a killed process's overlay mounts
            unmount(point)
            recovered.append(f"unmounted {point}")
        recovered += _remove_outside(tmp / _OUTSIDE)
        rmtree(tmp, ignore_errors=True)  # staging of a process that died mid-write
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
        return cls(path, db, content, lock, recovered)

    def close(self, *, checkpoint: bool = True) -> None:
        """Close the database (see :meth:`StateDB.close` for ``checkpoint``) and release the
        lock."""
        self.db.close(checkpoint=checkpoint)
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> StateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: under ``tmp/``: symlinks to private directories a build keeps outside the root
_OUTSIDE = "outside"


def record_outside(tmp: Path, path: Path) -> Path:
    """Record ``path``, a private ``llbkit-*`` directory outside the root (a secret's, on
    tmpfs), before anything is put in it: if this process is killed, the next owner of the
    root removes it. Returns the record, to unlink once ``path`` is gone."""
    held = tmp / _OUTSIDE
    held.mkdir(exist_ok=True)
    record = held / path.name
    os.symlink(path, record)
    return record


def _remove_outside(held: Path) -> list[str]:
    """Remove what a killed owner recorded with :func:`record_outside`; what was removed."""
    removed = []
    try:
        records = list(held.iterdir())
    except OSError:
        return []
    places = {os.path.realpath("/dev/shm"), os.path.realpath(tempfile.gettempdir())}
    for record in records:
        with contextlib.suppress(OSError):
            target = Path(os.readlink(record))
            # Only what record_outside records: never a path a damaged record could name.
            mine = target.name.startswith("llbkit-")
            if mine and os.path.realpath(target.parent) in places and target.exists():
                rmtree(target, ignore_errors=True)
                removed.append(f"removed {target}")
    return removed


def _acquire(lock: IO[str], path: Path, wait: Callable[[str], None] | None) -> None:
    """Take the root's lock, or fail naming its holder, or (with ``wait``) wait for it."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
    if wait is None:
        raise StateRootError(
            f"state root {path} is in use by {holder}; wait for it to finish or use another --root"
        )
    wait(f"waiting for state root {path} (in use by {holder})...")
    # Python runs signal handlers while flock(2) blocks and resumes it only if they return, so
    # Ctrl-C's KeyboardInterrupt ends the wait at once; the kernel wakes us as the lock frees.
    with _interruptible():
        fcntl.flock(lock, fcntl.LOCK_EX)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Make Ctrl-C raise KeyboardInterrupt, even under an event loop: asyncio's own handler
    only cancels its main task, which a blocked call never notices. Only the main thread
    receives signals; elsewhere, and where SIGINT is ignored, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):  # ignored, or a handler Python cannot restore
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _newer(path: Path, err: NewerSchemaError) -> StateRootError:
    return StateRootError(
        f"state root {path} was written by a newer llbkit (schema {err.found}, this llbkit "
        f"knows {SCHEMA_VERSION}); upgrade llbkit or use another --root"
    )
