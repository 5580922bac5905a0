"""In-memory stand-ins for what the engine hands a plugin, for plugin tests."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llbkit.core.client.directory import FileDirectory
from llbkit.core.errors import UserError
from llbkit.core.fs.sync import sync_tree
from llbkit.core.plugins.context import BlobSource, DNSConfig, PluginContext


def make_context(
    name: str,
    config: Mapping[str, Any] | None = None,
    state_dir: Path | None = None,
    *,
    registries: Mapping[str, Mapping[str, Any]] | None = None,
    dns: DNSConfig | None = None,
    cache_dir: Path | None = None,
) -> PluginContext:
    """The context the engine would construct a driver with; ``registries`` gives it the
    engine's own registry access with those ``[registry."host"]`` settings, ``dns`` the
    engine's ``[dns]``, ``cache_dir`` a directory for what only saves time."""
    access = None
    if registries is not None:
        from llbkit.core.registry.access import EngineRegistries

        access = EngineRegistries(registries)
    return PluginContext(
        name=name,
        distribution="test 0",
        config=dict(config or {}),
        state_dir=state_dir,
        registries=access,
        dns=dns,
        cache_dir=cache_dir,
    )


class _Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


@dataclass
class MemoryClientIO:
    """A client that keeps what it is sent: bytes in ``outputs[dest]``, trees in ``tree_root``,
    and ``directory(path)`` beneath ``tree_root`` (an absolute ``path`` too)."""

    tree_root: Path
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    outputs: dict[str, bytes] = field(default_factory=dict)
    locals: Mapping[str, Path] = field(default_factory=dict)

    @asynccontextmanager
    async def open_output(self, dest: str) -> AsyncIterator[_Sink]:
        sink = _Sink()
        yield sink
        # Only a completed block counts, as with a real client's atomic rename.
        self.outputs[dest] = b"".join(sink.chunks)

    async def write_tree(self, dest: str, tree: Path) -> None:
        shutil.copytree(tree, self.tree_root / dest, symlinks=True, dirs_exist_ok=True)

    def directory(self, path: str) -> FileDirectory:
        # Created by the first write, so a test sees whether a driver wrote anything.
        return FileDirectory(self.tree_root / path.lstrip("/"))

    async def secret(self, id: str) -> bytes:
        try:
            return self.secrets[id]
        except KeyError:
            raise KeyError(f"secret {id!r} not provided") from None

    @asynccontextmanager
    async def layout_blob(self, store: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        raise UserError(f"no OCI layout {store!r} in this test client")
        yield  # pragma: no cover

    async def ssh_agent(self, id: str) -> Path:
        raise UserError(f"no SSH agent {id or 'default'!r} in this test client")

    def local_identity(self, name: str) -> str:
        if name not in self.locals:
            raise UserError(f"local directory {name!r} not provided")
        return f"memory:{self.locals[name]}"

    async def sync_local(
        self,
        name: str,
        dest: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> set[str]:
        self.local_identity(name)
        return sync_tree(
            self.locals[name], dest, include=include, exclude=exclude, follow_paths=follow_paths
        )


@dataclass
class RecordingProgress:
    """A :class:`~llbkit.core.plugins.context.ProgressSink` that remembers every call."""

    statuses: list[tuple[str, int, int, bool]] = field(default_factory=list)
    logs: list[tuple[int, bytes]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        self.statuses.append((id, current, total, done))

    def log(self, data: bytes, *, stream: int = 1) -> None:
        self.logs.append((stream, data))

    def warn(self, message: str, *, detail: Sequence[str] = (), url: str = "") -> None:
        self.warnings.append(message)


@dataclass
class MemoryCacheStore:
    """A :class:`~llbkit.core.plugins.cache_backend.CacheStore` in a dict, to compare against."""

    name: str = "memory"
    blobs: dict[str, bytes] = field(default_factory=dict)
    index: bytes | None = None
    index_format: Literal["manifest", "config"] = "manifest"

    async def read_index(self) -> bytes | None:
        return self.index

    async def write_index(self, data: bytes) -> None:
        self.index = bytes(data)

    async def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        if digest not in self.blobs:
            raise KeyError(digest)
        yield self.blobs[digest]

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        data = b"".join([chunk async for chunk in chunks])
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest or len(data) != size:
            raise ValueError(
                f"blob {digest} ({size} bytes) received as {actual} ({len(data)} bytes)"
            )
        self.blobs[digest] = data

    def blob_source(self) -> BlobSource | None:
        # Not a registry: nothing to mount from.
        return None

    async def aclose(self) -> None:
        return None
