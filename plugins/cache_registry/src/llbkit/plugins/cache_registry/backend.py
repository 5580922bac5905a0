"""BuildKit's ``type=registry`` cache: the blobs and the index document in one repository.

The index is a manifest under the ref's tag, so ``docker pull``-style tools see the cache as an
image index; the blobs (layers and the cache config) are ordinary blobs of the repository. All
traffic goes through the engine's registry access, so the engine's ``[registry."host"]``
settings and the user's ``docker login`` credentials apply as for pulls and pushes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import ClassVar

import anyio
from anyio import AsyncFile

from llbkit.core.errors import ConfigError, UserError, check_options
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import BlobFile, checked_digest, verified_spool
from llbkit.core.plugins.cache_backend import Direction, IndexFormat
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.core.plugins.registries import RegistrySession
from llbkit.core.reference import Reference, parse_reference

__all__ = ["OPTIONS", "SMALL_BLOB", "RegistryCacheBackend", "RegistryCacheStore"]

#: ``ref`` names the cache in both directions, as BuildKit's ``type=registry``
OPTIONS = ("ref",)
#: blobs up to this size are pushed from memory; larger ones are spooled to a file first
SMALL_BLOB = 4 << 20


class RegistryCacheStore:
    """One repository opened for a build; the session closes with :meth:`aclose`."""

    def __init__(
        self,
        label: str,
        ref: Reference,
        session: RegistrySession,
        stack: AsyncExitStack,
        *,
        writable: bool,
        spool_dir: Path | None,
    ) -> None:
        self.ref = ref
        self.writable = writable
        self._label = label
        self._session = session
        self._stack = stack
        self._spool_dir = spool_dir

    @property
    def index_format(self) -> IndexFormat:
        # A manifest naming the config and layer blobs, as BuildKit keeps this kind of cache.
        return "manifest"

    @property
    def name(self) -> str:
        return f"{self._label} {self.ref}"

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def read_index(self) -> bytes | None:
        found = await self._session.get_manifest(self.ref.digest or self.ref.tag)
        if found is None:
            return None
        if self.ref.digest and found.digest != self.ref.digest:
            raise UserError(f"cache {self.name}: the registry served {found.digest} instead")
        return found.data

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        try:
            media_type = json.loads(data)["mediaType"]
        except (ValueError, RecursionError, TypeError, KeyError):
            # Core writes a manifest that says what it is; anything else is a caller's bug.
            raise ValueError(f"cache {self.name}: the index document has no mediaType") from None
        await self._session.push_manifest(self.ref.tag, data, str(media_type))

    async def has_blob(self, digest: str) -> bool:
        return await self._session.has_blob(checked_digest(digest))

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        try:
            async with self._session.read_blob(checked_digest(digest)) as chunks:
                async for chunk in chunks:
                    yield chunk
                return
        except KeyError:
            pass
        # An image index lists platform manifests, which a registry keeps as manifests.
        manifest = await self._session.get_manifest(digest)
        if manifest is None:
            raise KeyError(digest)
        yield manifest.data

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        checked_digest(digest)
        if isinstance(chunks, BlobFile) and size > SMALL_BLOB:
            # A layer in the engine's store: streamed from there (the registry checks the
            # digest too), not copied to a spool file first.
            async with verified_spool(digest, size, chunks) as stored:
                await self._session.push_blob(digest, stored)
            return
        received, arrived, got = await self._receive(chunks)
        try:
            if (arrived, got) != (digest, size):
                raise ValueError(f"blob {digest} ({size} bytes) arrived as {arrived} ({got} bytes)")
            if isinstance(received, Path):
                await self._session.push_blob(digest, received)
            else:
                await self._session.push_bytes(digest, received)
        finally:
            if isinstance(received, Path):
                received.unlink(missing_ok=True)

    async def _receive(self, chunks: AsyncIterable[bytes]) -> tuple[bytes | Path, str, int]:
        """Take in a blob with its digest and size: in memory while it is small, in a spool
        file once it is not (the caller removes the file)."""
        hasher, got, buffer = hashlib.sha256(), 0, bytearray()
        spool: Path | None = None
        handle: AsyncFile[bytes] | None = None
        try:
            async for chunk in chunks:
                hasher.update(chunk)
                got += len(chunk)
                if handle is None and got <= SMALL_BLOB:
                    buffer += chunk
                    continue
                if handle is None:
                    spool = self._spool_path()
                    handle = await anyio.open_file(spool, "wb")
                    await handle.write(bytes(buffer))
                    buffer.clear()
                await handle.write(chunk)
        except BaseException:
            # A failed or cancelled transfer leaves no spool file behind; the error goes on.
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise
        finally:
            if handle is not None:
                await handle.aclose()
        return (bytes(buffer) if spool is None else spool), "sha256:" + hasher.hexdigest(), got

    def _spool_path(self) -> Path:
        """A new empty file for a large blob: the driver's state directory keeps it on the
        engine's disk; without one, the system's temporary directory."""
        if self._spool_dir is not None:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="blob-", suffix=".tmp", dir=self._spool_dir)
        os.close(fd)
        return Path(name)

    def blob_source(self) -> BlobSource:
        return BlobSource(self.ref.domain, self.ref.path)

    async def aclose(self) -> None:
        await self._stack.aclose()


class RegistryCacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> RegistryCacheStore:
        what = f"cache backend {self.ctx.name}"
        check_options(what, attrs, OPTIONS)
        text = attrs.get("ref", "")
        if not text:
            raise ConfigError(f"{what}: ref= is required")
        try:
            ref = parse_reference(text)
        except UserError as err:
            raise ConfigError(f"{what}: {err}") from None
        if ref.digest and direction == "export":
            raise ConfigError(
                f"{what}: ref={text} names a digest; an export needs a tag (ref=host/repo:tag)"
            )
        if self.ctx.registries is None:
            raise ConfigError(f"{what}: this engine gives its plugins no registry access")
        stack = AsyncExitStack()
        session = await stack.enter_async_context(
            self.ctx.registries.session(str(ref), push=direction == "export")
        )
        spool_dir = None if self.ctx.state_dir is None else self.ctx.state_dir / "spool"
        return RegistryCacheStore(
            self.ctx.name,
            ref,
            session,
            stack,
            writable=direction == "export",
            spool_dir=spool_dir,
        )
