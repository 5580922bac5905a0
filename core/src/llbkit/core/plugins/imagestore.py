"""A worker's image store: where its runtime keeps images it can run (containerd's).

Shared vocabulary of the worker and exporter contracts: an executor whose runtime has a store
implements :class:`WithImageStore`; an exporter reaches it through
``ExportInfo.image_store``. The OCI worker has none.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["ImageStore", "StoredTarget", "UsesImageStore", "WithImageStore"]


class StoredTarget(NamedTuple):
    """What a stored image names: its manifest or index."""

    digest: str
    size: int
    media_type: str


@runtime_checkable
class ImageStore(Protocol):
    """Where a worker's runtime keeps images it can run (containerd's content and images).

    An executor that has one also implements :class:`WithImageStore`; the image exporter with
    ``store=true`` (BuildKit's default) writes an image's blobs there, each after the blobs it
    references, then names the image. The OCI worker has none.
    """

    @property
    def name(self) -> str:
        """The store in messages (``containerd at /run/containerd/containerd.sock``)."""
        ...

    async def has_blob(self, digest: str) -> bool:
        """Whether blob ``digest`` is in the store."""
        ...

    async def write_blob(
        self,
        digest: str,
        data: AsyncIterable[bytes],
        *,
        size: int,
        media_type: str,
        children: Sequence[str] = (),
    ) -> None:
        """Store blob ``digest`` (verified) unless it is there; ``children`` are the digests it
        references (a manifest's config and layers, an index's manifests), which the store then
        keeps for as long as it keeps this one."""
        ...

    async def name_image(self, name: str, *, digest: str, size: int, media_type: str) -> None:
        """Point image ``name`` (a normalized reference) at the stored manifest or index."""
        ...

    async def hold_blob(self, digest: str) -> bool:
        """Keep blob ``digest`` from the runtime's garbage collector while this engine runs
        (what a build uses); ``False`` when the store does not have it."""
        ...

    async def find_image(self, name: str) -> StoredTarget | None:
        """What image ``name`` (a normalized reference) names, or ``None`` if there is none."""
        ...

    def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        """Blob ``digest``'s bytes, as stored (the caller verifies them)."""
        ...

    async def unpack(self, manifest: str) -> None:
        """Unpack the stored image manifest ``manifest`` for the runtime (containerd: into its
        snapshotter), so the image runs without unpacking first (``unpack=true``)."""
        ...


@runtime_checkable
class WithImageStore(Protocol):
    """An executor whose runtime has an :class:`ImageStore`."""

    @property
    def image_store(self) -> ImageStore:
        """The runtime's image store."""
        ...


@runtime_checkable
class UsesImageStore(Protocol):
    """A source that looks images up in, and pulls them into, the worker's image store: the
    engine hands it a getter (``None`` when the chosen worker has no store)."""

    def use_image_store(self, getter: Callable[[], Awaitable[ImageStore | None]]) -> None:
        """Keep ``getter`` for the source's jobs."""
        ...
