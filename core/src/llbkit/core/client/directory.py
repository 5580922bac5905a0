"""A :class:`~llbkit.core.plugins.context.ClientDirectory` on this machine's filesystem: the
client's own, while the engine is embedded.

Two promises rest on the order here: a file appears whole or not at all (written under a
temporary name, fsynced, renamed, its directory fsynced), and :meth:`FileDirectory.update`
reads, changes and replaces a file under an exclusive ``flock`` of ``<name>.lock``, so
concurrent updates from any number of processes never lose one another. Blocking work runs in
worker threads. Failures of the filesystem are the user's (a full disk, a read-only
directory): one line naming the path.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

from llbkit.core.errors import UserError
from llbkit.core.fs.durable import fsync_dir

__all__ = ["FileDirectory"]

CHUNK = 1 << 20


def _check_name(name: str) -> str:
    """``name`` if it is a relative path that stays inside the directory; else ValueError."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name or {"", ".", ".."} & set(parts):
        raise ValueError(f"{name!r} is not a relative path inside the directory")
    return name


@contextmanager
def _user_error(verb: str, path: Path) -> Iterator[None]:
    """Turn the filesystem's refusal into one line naming the path."""
    try:
        yield
    except OSError as err:
        raise UserError(f"cannot {verb} {path}: {err.strerror or err}") from None


def _open_temp(path: Path) -> tuple[IO[bytes], Path]:
    """A new temporary file beside ``path``, to :func:`_publish` or :func:`_discard`."""
    with _user_error("write", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
        return tmp.open("xb"), tmp


def _publish(out: IO[bytes], tmp: Path, path: Path) -> None:
    """fsync the temporary file and rename it over ``path``, durably."""
    with _user_error("write", path):
        with out:
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)


def _discard(out: IO[bytes], tmp: Path) -> None:
    """Drop a temporary file that will not be published: nothing is left behind."""
    out.close()
    tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    out, tmp = _open_temp(path)
    try:
        with _user_error("write", path):
            out.write(data)
        _publish(out, tmp, path)
    except BaseException:
        _discard(out, tmp)
        raise


def _update(path: Path, change: Callable[[bytes | None], bytes]) -> None:
    with _user_error("write", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock").open("a")
    with lock:
        # Blocks until the other writer is done; released when the file closes.
        with _user_error("lock", path):
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror or err}") from None
        _write_atomic(path, change(current))


class _FileSink:
    def __init__(self, out: IO[bytes], path: Path) -> None:
        self.out = out
        self.path = path

    async def write(self, data: bytes) -> None:
        with _user_error("write", self.path):
            await anyio.to_thread.run_sync(self.out.write, data)


class FileDirectory:
    """Directory ``root`` of this machine, created by the first write."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"FileDirectory({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root / _check_name(name)

    async def exists(self, name: str) -> bool:
        return await anyio.to_thread.run_sync(self._path(name).is_file)

    @asynccontextmanager
    async def read(self, name: str) -> AsyncIterator[AsyncIterator[bytes]]:
        path = self._path(name)
        try:
            handle = await anyio.to_thread.run_sync(path.open, "rb")
        except FileNotFoundError:
            raise KeyError(name) from None
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror or err}") from None

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                with _user_error("read", path):
                    data = await anyio.to_thread.run_sync(handle.read, CHUNK)
                if not data:
                    return
                yield data

        try:
            yield chunks()
        finally:
            handle.close()

    @asynccontextmanager
    async def write(self, name: str) -> AsyncIterator[_FileSink]:
        path = self._path(name)
        out, tmp = await anyio.to_thread.run_sync(_open_temp, path)
        try:
            yield _FileSink(out, path)
            await anyio.to_thread.run_sync(_publish, out, tmp, path)
        except BaseException:
            # Shielded: a cancelled block must still remove its temporary file.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, out, tmp)
            raise

    async def update(self, name: str, change: Callable[[bytes | None], bytes]) -> None:
        await anyio.to_thread.run_sync(_update, self._path(name), change)
