"""The cache-backend contract: blobs by digest plus one index, for ``--export/--import-cache``.

Group ``llbkit.cache_backends``; the entry-point name is the ``type=`` word (``local``, ``s3``,
``gha``...). Core decides what to store (layer blobs, the cache-key graph as an index document);
a backend only moves bytes, so a new backend is short.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import PluginContext

__all__ = ["API_VERSION", "CacheBackend", "CacheStore", "Direction"]

API_VERSION = 2

Direction = Literal["import", "export"]


class CacheBackend(Protocol):
    """A named cache backend; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(self, attrs: Mapping[str, str], direction: Direction) -> CacheStore:
        """Validate the ``--export-cache``/``--import-cache`` attributes and open a store.

        Runs before the build. Must reject unknown keys by name
        (:class:`~llbkit.core.errors.UnknownOptionError`).

        :param direction: ``"import"`` opens for reading only, ``"export"`` for writing too.
        """
        ...


class CacheStore(Protocol):
    """An opened remote cache. Digests are ``sha256:<hex>`` strings."""

    async def read_index(self) -> bytes | None:
        """Return the index document, or ``None`` when the cache is empty."""
        ...

    async def write_index(self, data: bytes) -> None:
        """Replace the index document; runs last in an export, after every blob it names."""

    async def has_blob(self, digest: str) -> bool:
        """Tell whether a blob exists, so an export can skip it."""
        ...

    def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob's bytes; raises :class:`KeyError` when it does not exist."""
        ...

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """Store a blob whose content hashes to ``digest``; visible only once complete."""

    async def aclose(self) -> None:
        """Flush and release connections; runs once the build is over."""
