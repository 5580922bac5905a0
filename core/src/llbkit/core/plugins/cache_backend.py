"""The cache-backend contract: blobs by digest plus one index, for ``--export/--import-cache``.

Group ``llbkit.cache_backends``; the entry-point name is the ``type=`` word (``local``,
``registry``, ``s3``...). Core decides what is stored, in BuildKit's formats: the layer blobs and
an *index* document, which is either a manifest naming the cache config blob and the layers (an
OCI index, a Docker manifest list or an OCI image manifest, its ``mediaType`` saying which:
``index_format = "manifest"``, as registry and local caches keep it) or the cache config itself
with its layers described inside (``"config"``, as s3, azblob and gha caches keep it). A backend
only moves bytes; core retries what it marks :class:`TransientCacheError`.

A backend whose cache lives in the exported image rather than in a store of its own (BuildKit's
``type=inline``) answers :meth:`CacheBackend.resolve` with :class:`EmbedInImage`: the engine
then hands the records to the image exporters (``ExportInfo.inline_cache``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from llbkit.core.errors import UserError

if TYPE_CHECKING:
    from llbkit.core.plugins.context import BlobSource, ClientIO, PluginContext

__all__ = [
    "API_VERSION",
    "CacheBackend",
    "CacheStore",
    "Direction",
    "EmbedInImage",
    "IndexFormat",
    "TransientCacheError",
]

API_VERSION = 3

Direction = Literal["import", "export"]
IndexFormat = Literal["manifest", "config"]


class TransientCacheError(UserError):
    """A failure worth trying again (a 5xx, a timeout); core retries, with backoff. A service
    that asks to slow down (429, SlowDown, ServerBusy) is ``throttled``: waited for longer."""

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


@dataclass(frozen=True)
class EmbedInImage:
    """What an inline backend's ``resolve`` returns: embed the cache in the exported images.

    :param name: how messages name the cache (``inline``).
    """

    name: str = "inline"


class CacheBackend(Protocol):
    """A named cache backend; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> CacheStore | EmbedInImage:
        """Validate the ``--export-cache``/``--import-cache`` attributes and open a store.

        Runs before the build. Must reject unknown keys by name
        (:class:`~llbkit.core.errors.UnknownOptionError`). The attributes core reads itself
        (``mode``, ``ignore-error``, ``compression``, ``compression-level``,
        ``force-compression``, ``oci-mediatypes``, ``image-manifest``) are taken out first:
        ``attrs`` holds only the backend's own (``ref``, ``dest``...).

        :param direction: ``"import"`` opens for reading only, ``"export"`` for writing too.
        :param client: the client's side: a backend whose cache is a client path (``local``)
            reaches it only through this.
        """
        ...


class CacheStore(Protocol):
    """An opened remote cache. Digests are ``sha256:<hex>`` strings."""

    @property
    def name(self) -> str:
        """How messages and progress name this cache (``registry host:5000/app:cache``)."""
        ...

    @property
    def index_format(self) -> IndexFormat:
        """What the index document is: a manifest, or the cache config itself."""
        ...

    async def read_index(self) -> bytes | None:
        """The index document, or ``None`` when the cache has none yet."""
        ...

    async def write_index(self, data: bytes) -> None:
        """Publish ``data`` as the index document; core calls it last, once every blob it
        names is stored, so a reader never finds an index naming a missing blob."""

    async def has_blob(self, digest: str) -> bool:
        """Whether a blob exists, so an export can skip it."""
        ...

    def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob's bytes; raises :class:`KeyError` when it does not exist. Core checks
        the digest of what arrives."""
        ...

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """Store a blob whose content hashes to ``digest``; visible only once complete.
        ``chunks`` may be a file: :class:`~llbkit.core.plugins.blobcheck.BlobFile`."""

    def blob_source(self) -> BlobSource | None:
        """The registry repository holding the blobs, if the cache is one: an image pushed
        to the same registry then mounts imported layers instead of uploading them."""
        ...

    async def aclose(self) -> None:
        """Flush and release connections; runs once the build is over."""
