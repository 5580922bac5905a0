"""An example cache backend: blobs and the index as files of a directory, laid out as an OCI
image layout (``blobs/sha256/<hex>``, ``index.json``).

Core decides what to store and when; a backend only moves bytes. What it must get right: a
blob or index is visible whole or not at all, and a blob is stored under its true digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.cache_backend import Direction, IndexFormat
from llbkit.core.plugins.context import BlobSource, ClientIO

#: ``dest`` is read when exporting, ``src`` when importing (as BuildKit's ``type=local``)
OPTIONS = ("dest", "src")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class <REPLACE:Name>CacheStore:
    """One opened cache directory."""

    def __init__(self, root: Path, writable: bool) -> None:
        self.root = root
        self.writable = writable

    @property
    def index_format(self) -> IndexFormat:
        # A manifest naming the config and layer blobs, as BuildKit keeps this kind of cache.
        return "manifest"

    @property
    def name(self) -> str:
        return f"<REPLACE:name> {self.root}"

    def _blob(self, digest: str) -> Path:
        # The digest becomes a file name: refuse anything that could leave the directory.
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    async def _spool(self, path: Path, chunks: AsyncIterable[bytes]) -> tuple[Path, str, int]:
        """Write ``chunks`` next to ``path`` under a temporary name, for the caller to rename
        into place once it checked them: readers never see half a file."""
        if not self.writable:
            raise PermissionError(f"cache {self.root} was opened for import only")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        digest, size = hashlib.sha256(), 0
        try:
            async with await anyio.open_file(tmp, "wb") as out:
                async for chunk in chunks:
                    await out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, "sha256:" + digest.hexdigest(), size

    async def read_index(self) -> bytes | None:
        index = anyio.Path(self.root / "index.json")
        return await index.read_bytes() if await index.exists() else None

    async def write_index(self, data: bytes) -> None:
        async def whole() -> AsyncIterator[bytes]:
            yield data

        tmp, _, _ = await self._spool(self.root / "index.json", whole())
        os.replace(tmp, self.root / "index.json")

    async def has_blob(self, digest: str) -> bool:
        return await anyio.Path(self._blob(digest)).exists()

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        path = self._blob(digest)
        if not await anyio.Path(path).exists():
            raise KeyError(digest)
        async with await anyio.open_file(path, "rb") as blob:
            while chunk := await blob.read(1 << 20):
                yield chunk

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        path = self._blob(digest)
        tmp, got, got_size = await self._spool(path, chunks)
        if (got, got_size) != (digest, size):
            tmp.unlink()
            raise ValueError(f"blob {digest} ({size} bytes) arrived as {got} ({got_size} bytes)")
        os.replace(tmp, path)

    def blob_source(self) -> BlobSource | None:
        # A directory, not a registry: a push has nothing to mount from here.
        return None

    async def aclose(self) -> None:
        return None


class <REPLACE:Name>CacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> <REPLACE:Name>CacheStore:
        # The directory is used through this process's filesystem, so this example is a cache
        # on the engine's machine; a cache on the client's machine goes through
        # ``client.directory(path)`` instead, as llbkit-cache-local does.
        for key in attrs:
            if key not in OPTIONS:
                raise UnknownOptionError(f"cache backend {self.ctx.name}", key, OPTIONS)
        key = "dest" if direction == "export" else "src"
        if not attrs.get(key):
            raise ConfigError(f"cache backend {self.ctx.name}: {key}= is required to {direction}")
        return <REPLACE:Name>CacheStore(Path(attrs[key]), writable=direction == "export")
