"""``type=local``: the build cache in a directory laid out as an OCI image layout, as
BuildKit's local cache writes it (``oci-layout``, ``blobs/sha256/<hex>``, ``index.json`` with
one entry per ``tag``), so either tool reads what the other wrote.

The directory is opened through this process's filesystem, which is the client's while the
engine is embedded; with a daemon it will go through the client's session (``ClientIO``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.cache_backend import Direction
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.plugins.cache_local import _layout

#: each direction reads its own keys and accepts the other's directory key, so one set of
#: attributes can serve both (``dest`` is read to export, ``src`` and ``digest`` to import)
OPTIONS: Mapping[Direction, tuple[str, ...]] = {
    "export": ("dest", "src", "tag"),
    "import": ("dest", "digest", "src", "tag"),
}
CHUNK = 1 << 20


class LocalCacheStore:
    """One opened cache directory: ``tag`` names its index document, or ``digest`` pins it."""

    def __init__(
        self, root: Path, *, label: str, tag: str, digest: str = "", writable: bool
    ) -> None:
        self.root = root
        self.label = label
        self.tag = tag
        self.digest = digest
        self.writable = writable

    @property
    def name(self) -> str:
        return f"{self.label} {self.root}"

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def read_index(self) -> bytes | None:
        if self.digest:
            digest, why = self.digest, "named by digest="
        else:
            entry = await anyio.to_thread.run_sync(_layout.find_entry, self.root, self.tag)
            if entry is None:
                return None
            named = entry.get("digest")
            if not isinstance(named, str) or not _layout.DIGEST.fullmatch(named):
                raise UserError(
                    f"cache {self.name}: tag {self.tag!r} in index.json names {named!r},"
                    " not a sha256 digest"
                )
            digest, why = named, f"named by tag {self.tag!r} in index.json"
        try:
            data = await anyio.Path(_layout.blob_path(self.root, digest)).read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"cache backend {self.label}: src={self.root} has no blob {digest} ({why})"
            ) from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"cache {self.name}: blob {digest} is corrupt: its bytes differ")
        return data

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        media_type = _media_type(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        await anyio.to_thread.run_sync(self._store_index, data, digest, media_type)

    def _store_index(self, data: bytes, digest: str, media_type: str) -> None:
        # The document is a blob like any other, durable before index.json names it.
        _layout.ensure_layout(self.root)
        _layout.write_atomic(_layout.blob_path(self.root, digest), data)
        entry = {
            "mediaType": media_type,
            "digest": digest,
            "size": len(data),
            "annotations": {_layout.REF_NAME: self.tag},
        }
        _layout.put_entry(self.root, entry, self.tag)

    async def has_blob(self, digest: str) -> bool:
        return await anyio.Path(_layout.blob_path(self.root, digest)).is_file()

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        path = _layout.blob_path(self.root, digest)
        try:
            blob = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise KeyError(digest) from None
        async with blob:
            while chunk := await blob.read(CHUNK):
                yield chunk

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        path = _layout.blob_path(self.root, digest)
        await anyio.to_thread.run_sync(_layout.ensure_layout, self.root)
        out, tmp = await anyio.to_thread.run_sync(_layout.open_temp, path)
        try:
            hasher, got = hashlib.sha256(), 0
            async for chunk in chunks:
                got += len(chunk)
                if got > size:
                    raise ValueError(f"blob {digest} is larger than its {size} bytes")
                hasher.update(chunk)
                await anyio.to_thread.run_sync(out.write, chunk)
            actual = "sha256:" + hasher.hexdigest()
            if (actual, got) != (digest, size):
                raise ValueError(f"blob {digest} ({size} bytes) arrived as {actual} ({got} bytes)")
            await anyio.to_thread.run_sync(_layout.publish, out, tmp, path)
        except BaseException:
            # Shielded: a cancelled export must still remove its temporary file.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_layout.discard, out, tmp)
            raise

    def blob_source(self) -> BlobSource | None:
        # A directory, not a registry: a push has nothing to mount from here.
        return None

    async def aclose(self) -> None:
        return None


def _media_type(data: bytes) -> str:
    """The index document's own ``mediaType``, which its entry in ``index.json`` repeats."""
    try:
        media_type = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        media_type = None
    if not isinstance(media_type, str) or not media_type:
        raise ValueError("the cache index document is not a JSON manifest with a mediaType")
    return media_type


class LocalCacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> LocalCacheStore:
        what = f"cache backend {self.ctx.name}"
        for key in attrs:
            if key not in OPTIONS[direction]:
                raise UnknownOptionError(what, key, OPTIONS[direction])
        key = "dest" if direction == "export" else "src"
        if not attrs.get(key):
            raise ConfigError(f"{what}: {key}= is required to {direction}")
        digest = attrs.get("digest", "") if direction == "import" else ""
        if digest and not _layout.DIGEST.fullmatch(digest):
            raise ConfigError(f"{what}: digest={digest!r} is not sha256:<64 hex digits>")
        return LocalCacheStore(
            Path(attrs[key]),
            label=self.ctx.name,
            tag=attrs.get("tag") or "latest",
            digest=digest,
            writable=direction == "export",
        )
