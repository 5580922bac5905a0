"""The engine as a frontend sees it: the client's files, solves, results' files, images."""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from llbkit.core.cache.leases import Lease
from llbkit.core.cache.refs import ResultRef
from llbkit.core.control.stepsink import StepSink
from llbkit.core.errors import UserError
from llbkit.core.fs.rootpath import resolve_in_root
from llbkit.core.llb.definition import is_empty_definition, load_definition
from llbkit.core.patterns import PatternMatcher
from llbkit.core.plugins.context import ClientIO, Result
from llbkit.core.plugins.frontend import FileStat
from llbkit.core.plugins.progress import (
    ProgressEvent,
    ProgressSink,
    Vertex,
    VertexWarning,
)
from llbkit.core.plugins.source import ImageResolver
from llbkit.core.solver.cache_sources import CacheChain
from llbkit.core.solver.solver import Solver

__all__ = ["EngineFrontendClient"]

#: Go's os.FileMode type bits, as gateway's Stat carries them
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_DEVICE = 1 << 26
_GO_CHAR = 1 << 21


def _go_mode(st: os.stat_result) -> int:
    mode = st.st_mode & 0o777
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        mode |= _GO_DIR
    elif kind == stat.S_IFLNK:
        mode |= _GO_SYMLINK
    elif kind == stat.S_IFIFO:
        mode |= _GO_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= _GO_SOCKET
    elif kind == stat.S_IFCHR:
        mode |= _GO_DEVICE | _GO_CHAR
    elif kind == stat.S_IFBLK:
        mode |= _GO_DEVICE
    return mode


def _step_digest(salt: bytes, name: str, key: str) -> str:
    keyed = f"{name}\0{key}" if key else name
    return "sha256:" + hashlib.sha256(salt + keyed.encode()).hexdigest()


def _stat(path: Path, name: str) -> FileStat:
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    return FileStat(name, _go_mode(st), st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid, link)


class EngineFrontendClient:
    """One build's :class:`~llbkit.core.plugins.frontend.FrontendClient`."""

    def __init__(
        self,
        *,
        solver: Solver,
        session: ClientIO,
        lease: Lease,
        emit: Callable[[ProgressEvent], None],
        images: ImageResolver,
        inputs: Mapping[str, bytes],
        allow: Sequence[str],
        tmp: Path,
        name: str = "frontend",
        cache: Callable[[], Awaitable[CacheChain | None]] | None = None,
    ) -> None:
        """:param name: the frontend's, for the step its warnings show under.
        :param cache: where solves look for results (the engine's, and imported caches),
            once the imported caches are read."""
        self._cache = cache
        self._solver = solver
        self._session = session
        self._lease = lease
        self._emit = emit
        self._images = images
        self._inputs = dict(inputs)
        self._allow = list(allow)
        self._tmp = tmp
        # A frontend the client runs through the gateway is unnamed here: "[internal] frontend"
        self._step_name = f"[internal] frontend {name}".rstrip()
        self._warnings_step = ""
        self._warnings_started = 0.0
        #: the frontend's own steps, by name: one digest per name within this build
        self._salt = os.urandom(16)
        self._steps: dict[tuple[str, str], str] = {}
        self._started: dict[str, float] = {}

    async def read_file(
        self, context: str, path: str, *, progress: Callable[[int], None] | None = None
    ) -> bytes:
        found = await self.read_files(context, [path], progress=progress)
        if path not in found:
            raise UserError(f"{path}: not found in local directory {context!r}")
        return found[path]

    async def read_files(
        self,
        context: str,
        paths: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, bytes]:
        # Each path as BuildKit's local source follows it (a symlink's target comes too):
        # relative to the directory, cleaned; a link resolved inside what came, never on the
        # host that reads it.
        clean = {path: posixpath.normpath("/" + path).lstrip("/") for path in paths}
        with tempfile.TemporaryDirectory(dir=self._tmp) as tmp:
            follow = sorted({name for name in clean.values() if name})
            await self._session.sync_local(
                context, Path(tmp), follow_paths=follow, progress=progress
            )
            found = {}
            for path, name in clean.items():
                target = resolve_in_root(Path(tmp), name) if name else None
                if target is not None and target.is_file():
                    found[path] = target.read_bytes()
            return found

    async def solve(self, definition: bytes) -> Result:
        if is_empty_definition(definition):
            return ResultRef(self._solver.store, "", ())
        loaded = load_definition(definition, source="frontend")
        cache = await self._cache() if self._cache is not None else None
        ref = await self._solver.solve(
            loaded, self._session, self._emit, self._lease, allow=self._allow, cache=cache
        )
        return ref if ref is not None else ResultRef(self._solver.store, "", ())

    async def read_ref_file(
        self, ref: Result, path: str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        async with ref.mount() as root:

            def read() -> bytes:
                target = resolve_in_root(root, path)
                try:
                    with open(target, "rb") as handle:
                        handle.seek(offset)
                        return handle.read(-1 if length is None else length)
                except OSError as err:
                    raise UserError(f"cannot read {path}: {err.strerror}") from None

            return await anyio.to_thread.run_sync(read)

    async def read_dir(self, ref: Result, path: str, include: str = "") -> Sequence[FileStat]:
        async with ref.mount() as root:

            def listing() -> list[FileStat]:
                target = resolve_in_root(root, path)
                try:
                    names = sorted(os.listdir(target))
                except OSError as err:
                    raise UserError(f"cannot read directory {path}: {err.strerror}") from None
                # BuildKit matches the include pattern as fsutil does: Docker's patterns.
                wanted = PatternMatcher([include]).matches if include else None
                return [
                    _stat(target / name, name) for name in names if wanted is None or wanted(name)
                ]

            return await anyio.to_thread.run_sync(listing)

    async def stat_file(self, ref: Result, path: str) -> FileStat:
        async with ref.mount() as root:

            def one() -> FileStat:
                target = resolve_in_root(root, path, follow_last=False)
                try:
                    return _stat(target, path)
                except OSError as err:
                    raise UserError(f"cannot stat {path}: {err.strerror}") from None

            return await anyio.to_thread.run_sync(one)

    def inputs(self) -> Mapping[str, bytes]:
        return dict(self._inputs)

    @property
    def images(self) -> ImageResolver:
        return self._images

    def warn(
        self,
        message: str,
        *,
        detail: Sequence[str] = (),
        url: str = "",
        source: str = "",
    ) -> None:
        if not self._warnings_step:
            # A step of its own, named, that the warnings show under (BuildKit shows them
            # under the step that loaded the build definition).
            self._warnings_step = "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest()
            self._warnings_started = time.time()
            self._emit(Vertex(self._warnings_step, self._step_name, started=time.time()))
        self._emit(
            VertexWarning(self._warnings_step, time.time(), message, 1, tuple(detail), url, source)
        )

    def step(self, name: str, key: str = "") -> AbstractAsyncContextManager[ProgressSink]:
        return self._step(name, key)

    @asynccontextmanager
    async def _step(self, name: str, key: str) -> AsyncIterator[ProgressSink]:
        digest = self._steps.get((name, key))
        if digest is None:
            digest = self._steps[name, key] = _step_digest(self._salt, name, key)
        started = self._started.setdefault(digest, time.time())
        # Shown as it starts, as BuildKit shows its vertexes (steps read at once are numbered
        # in the order they began); a step that fails is shown failed, as BuildKit shows a
        # ``load metadata for`` whose image cannot be resolved.
        sink = StepSink(
            self._emit, digest, lambda: self._emit(Vertex(digest, name, started=started))
        )
        sink.begin()
        try:
            yield sink
        except Exception as err:
            sink.begin()
            self._emit(Vertex(digest, name, started=started, completed=time.time(), error=str(err)))
            raise
        except BaseException:
            # Stopped by a sibling's failure: shown as BuildKit shows it, canceled.
            self._emit(
                Vertex(
                    digest, name, started=started, completed=time.time(), error="context canceled"
                )
            )
            raise
        sink.begin()
        self._emit(Vertex(digest, name, started=started, completed=time.time()))

    def close(self) -> None:
        """The frontend is done: the step its warnings show under ends."""
        if self._warnings_step:
            self._emit(
                Vertex(
                    self._warnings_step,
                    self._step_name,
                    started=self._warnings_started,
                    completed=time.time(),
                )
            )
