"""Images pulled lazily: a source job whose layers may stay blobs until a step reads them.

As BuildKit pulls an image, a build that reads none of its files (``FROM`` and metadata
instructions) moves its blobs for an image or OCI export, or nothing without an exporter, and
unpacks nothing; a step that reads the files has them fetched and unpacked first. The engine
decides when (no step of the build reads the source's output, and every exporter of the build
takes blobs only, :class:`~llbkit.core.plugins.exporter.ExportsBlobs`, or there is none and
nothing reads the result after the build); the job names its blobs and fetches one, and may
hand the download over as it starts, so the layer is unpacked while it comes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable

from llbkit.core.plugins.source import StackedSourceJob

if TYPE_CHECKING:
    from pathlib import Path

    from llbkit.core.plugins.context import BlobSource
    from llbkit.core.plugins.progress import ProgressSink

__all__ = ["GrowingBlob", "LazySourceJob", "RemoteLayer"]


class GrowingBlob(Protocol):
    """A blob being downloaded, read by another thread as it grows."""

    def reader(self) -> IO[bytes]:
        """The blob from its start, each read waiting for bytes not written yet; a read
        raises once the download has failed."""
        ...

    def failed(self) -> bool:
        """Whether the download failed, once it is over (waiting for it)."""
        ...

    def close(self) -> None:
        """The reading is done (called once, by whoever was handed the blob)."""
        ...


@dataclass(frozen=True)
class RemoteLayer:
    """One image layer as its blob: what the store records of a layer not pulled yet, with
    its ``diff_id`` (from the config), the repository a push can mount it from (``source``)
    and its description (BuildKit's ``pulled from REF@DIGEST``)."""

    digest: str
    size: int
    media_type: str
    diff_id: str
    source: BlobSource | None = None
    description: str = ""


@runtime_checkable
class LazySourceJob(StackedSourceJob, Protocol):
    """A stacked job (:class:`~llbkit.core.plugins.source.StackedSourceJob`) whose layers the
    store may record as blobs, fetched one by one when needed."""

    async def remote_layers(self) -> Sequence[RemoteLayer] | None:
        """The layers as blobs, bottom first, pulling nothing (the key's resolve has the
        manifest); ``None`` when they must be pulled now (no diff id for each layer, say)."""
        ...

    async def fetch_blob(
        self,
        digest: str,
        dest: Path,
        progress: ProgressSink,
        *,
        streamed: Callable[[GrowingBlob], None] | None = None,
    ) -> None:
        """Download the blob ``digest`` (one of :meth:`remote_layers`), verified, into the
        new file ``dest``, its progress shown as a layer's download is. A download may be
        handed to ``streamed`` as it starts (at most once), to be read while it comes; the
        blob counts only once this returns (it is verified then)."""
