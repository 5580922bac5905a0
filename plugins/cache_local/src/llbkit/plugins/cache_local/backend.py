"""``type=local``: the build cache in a directory laid out as an OCI image layout, as
BuildKit's local cache writes it (``oci-layout``, ``blobs/sha256/<hex>``, ``index.json`` with
one entry per ``tag``), so either tool reads what the other wrote.

The directory is the client's (``dest=``/``src=`` are paths on the user's machine), so it is
reached only through ``ClientIO.directory``, never this process's filesystem: with a daemon the
two differ. The directory makes each file appear whole or not at all, and its ``update`` holds
``index.json.lock`` as BuildKit does, so concurrent exports never lose each other's tags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import ClassVar

from llbkit.core import ocilayout as _layout
from llbkit.core.errors import ConfigError, UserError, check_options
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import BlobFile
from llbkit.core.plugins.cache_backend import Direction, IndexFormat
from llbkit.core.plugins.context import BlobSource, ClientDirectory, ClientIO

#: each direction reads its own keys and accepts the other's directory key, so one set of
#: attributes can serve both (``dest`` is read to export, ``src`` and ``digest`` to import)
OPTIONS: Mapping[Direction, tuple[str, ...]] = {
    "export": ("dest", "src", "tag"),
    "import": ("dest", "digest", "src", "tag"),
}


class LocalCacheStore:
    """One opened cache directory: ``tag`` names its index document, or ``digest`` pins it."""

    def __init__(
        self,
        directory: ClientDirectory,
        path: str,
        *,
        label: str,
        tag: str,
        digest: str = "",
        writable: bool,
    ) -> None:
        self.directory = directory
        self.path = path
        self.label = label
        self.tag = tag
        self.digest = digest
        self.writable = writable
        self._has_layout = False

    @property
    def index_format(self) -> IndexFormat:
        # A manifest naming the config and layer blobs, as BuildKit keeps this kind of cache.
        return "manifest"

    @property
    def name(self) -> str:
        return f"{self.label} {self.path}"

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def _read_all(self, name: str) -> bytes:
        async with self.directory.read(name) as chunks:
            return b"".join([chunk async for chunk in chunks])

    async def _ensure_layout(self) -> None:
        """Write the ``oci-layout`` marker once; a layout without it is not a layout."""
        if not self._has_layout:
            if not await self.directory.exists("oci-layout"):
                # Two exports may both write it: the same bytes, each whole, no lock needed.
                async with self.directory.write("oci-layout") as out:
                    await out.write(_layout.LAYOUT)
            self._has_layout = True

    async def read_index(self) -> bytes | None:
        if self.digest:
            digest, why = self.digest, "named by digest="
        else:
            try:
                data = await self._read_all("index.json")
            except KeyError:  # no index.json: an empty cache
                return None
            index = _layout.parse_index(data, f"cache {self.name}: index.json")
            entry = _layout.find_entry(index, self.tag)
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
            data = await self._read_all(_layout.blob_name(digest))
        except KeyError:  # the tag or digest= points at nothing: say which
            raise UserError(
                f"cache backend {self.label}: src={self.path} has no blob {digest} ({why})"
            ) from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"cache {self.name}: blob {digest} is corrupt: its bytes differ")
        return data

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        media_type = _media_type(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        # The document is a blob like any other, durable before index.json names it.
        await self._ensure_layout()
        async with self.directory.write(_layout.blob_name(digest)) as out:
            await out.write(data)
        entry = {
            "mediaType": media_type,
            "digest": digest,
            "size": len(data),
            "annotations": {_layout.REF_NAME: self.tag},
        }
        where = f"cache {self.name}: index.json"
        await self.directory.update(
            "index.json", lambda current: _layout.put_entry(current, entry, self.tag, where)
        )

    async def has_blob(self, digest: str) -> bool:
        return await self.directory.exists(_layout.blob_name(digest))

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        name = _layout.blob_name(digest)
        try:
            async with self.directory.read(name) as chunks:
                async for chunk in chunks:
                    yield chunk
        except KeyError:  # the contract names the missing digest, not our file name
            raise KeyError(digest) from None

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        name = _layout.blob_name(digest)
        await self._ensure_layout()
        # Raising inside the block is what keeps a bad blob out: the directory drops it.
        # A layer from the engine's store was checked when stored: only its size is.
        stored = isinstance(chunks, BlobFile)
        async with self.directory.write(name) as out:
            hasher, got = hashlib.sha256(), 0
            async for chunk in chunks:
                got += len(chunk)
                if got > size:
                    raise ValueError(f"blob {digest} is larger than its {size} bytes")
                if not stored:
                    hasher.update(chunk)
                await out.write(chunk)
            actual = digest if stored else "sha256:" + hasher.hexdigest()
            if (actual, got) != (digest, size):
                raise ValueError(f"blob {digest} ({size} bytes) arrived as {actual} ({got} bytes)")

    def blob_source(self) -> BlobSource | None:
        # A directory, not a registry: a push has nothing to mount from here.
        return None

    async def aclose(self) -> None:
        return None


def _media_type(data: bytes) -> str:
    """The index document's own ``mediaType``, which its entry in ``index.json`` repeats."""
    try:
        media_type = json.loads(data).get("mediaType")
    except (ValueError, RecursionError, AttributeError):
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
        check_options(what, attrs, OPTIONS[direction])
        key = "dest" if direction == "export" else "src"
        if not attrs.get(key):
            raise ConfigError(f"{what}: {key}= is required to {direction}")
        digest = attrs.get("digest", "") if direction == "import" else ""
        if digest and not _layout.DIGEST.fullmatch(digest):
            raise ConfigError(f"{what}: digest={digest!r} is not sha256:<64 hex digits>")
        path = attrs[key]
        return LocalCacheStore(
            client.directory(path),
            path,
            label=self.ctx.name,
            tag=attrs.get("tag") or "latest",
            digest=digest,
            writable=direction == "export",
        )
