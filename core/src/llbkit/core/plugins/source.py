"""The source contract: outside content (images, git, http, local dirs) in a build.

Group ``llbkit.sources``, named by the identifier's scheme (``docker-image``, ``git``...).
Resolving parses a SourceOp; the job computes a portable cache key and, on a miss, fetches.
An image's layers come from a :class:`LayeredSourceJob` (a store layer each, its blob kept);
a driver resolving images for frontends: :class:`ImageResolver`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llbkit.core.plugins.context import BlobSource, ClientIO, Platform, PluginContext
    from llbkit.core.plugins.progress import ProgressSink

__all__ = [
    "API_VERSION",
    "FetchedLayer",
    "ImageConfig",
    "ImageResolver",
    "LayeredSourceJob",
    "ResolveMode",
    "ShowsKeyWork",
    "Source",
    "SourceJob",
    "StackedSourceJob",
]

API_VERSION = 2

#: ``image.resolvemode``: ``default`` (the registry, else what is known), ``pull``, ``local``
ResolveMode = Literal["default", "pull", "local"]


class Source(Protocol):
    """A source kind; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> SourceJob:
        """Parse a SourceOp (``identifier`` with its scheme) when the solver loads it;
        unknown keys of the source's namespace (``git.*``) are rejected by name."""
        ...


class SourceJob(Protocol):
    """One source vertex, parsed."""

    @property
    def record_type(self) -> str:
        """``du``'s record type: ``regular``, ``source.local``, ``source.git.checkout``..."""
        ...

    async def cache_key(self, client: ClientIO) -> str:
        """A key the same on every machine for the same content; runs before :meth:`fetch`
        (a cached key means no fetch)."""
        ...

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        """Write the content into the empty ``dest``; only on a cache miss."""

    def discard(self) -> None:
        """Drop what was fetched only for the key (a cached download); no build uses the
        vertex now."""


@runtime_checkable
class ShowsKeyWork(Protocol):
    """A job whose key's work shows as a sub-task (``resolve REF``, as BuildKit's)."""

    @property
    def key_status(self) -> str:
        """Its name."""
        ...


@dataclass(frozen=True)
class FetchedLayer:
    """One image layer, unpacked: ``tree`` (in the store's layer format) from the verified
    ``blob``; ``diff_id`` from the config ("" if none); ``source``: the repository a push can
    mount it from; ``description`` as BuildKit's (``pulled from REF@DIGEST``)."""

    tree: Path
    blob: Path
    digest: str
    size: int
    media_type: str
    diff_id: str = ""
    source: BlobSource | None = None
    description: str = ""


@runtime_checkable
class LayeredSourceJob(SourceJob, Protocol):
    """A source job whose content is an image's layers."""

    async def fetch_layers(
        self, client: ClientIO, stage: Path, progress: ProgressSink, layer_format: str
    ) -> Sequence[FetchedLayer]:
        """On a miss, instead of :meth:`fetch`: pull the layers (verified) and unpack each
        into a new directory under ``stage``, bottom first, in ``layer_format`` (``overlay``:
        0/0 devices and ``trusted.overlay.opaque``; ``oci``: ``.wh.`` files)."""
        ...


@runtime_checkable
class StackedSourceJob(LayeredSourceJob, Protocol):
    """A layered job naming its layers first: the store reuses the bottom ones it has (same
    diff ids on the same layers), as BuildKit's snapshots by chain id."""

    async def diff_ids(self) -> Sequence[str]:
        """The layers' diff ids, bottom first; empty if unknown."""
        ...

    async def fetch_layers(
        self,
        client: ClientIO,
        stage: Path,
        progress: ProgressSink,
        layer_format: str,
        skip: int = 0,
    ) -> Sequence[FetchedLayer]:
        """:meth:`LayeredSourceJob.fetch_layers`, less the ``skip`` bottom layers."""
        ...


@dataclass(frozen=True)
class ImageConfig:
    """An image for a frontend: its index's or manifest's digest, its config."""

    digest: str
    config: bytes


@runtime_checkable
class ImageResolver(Protocol):
    """Looks image configs up by reference, pulling no layers."""

    async def resolve_image_config(
        self, ref: str, platform: Platform, mode: ResolveMode = "default"
    ) -> ImageConfig:
        """The image ``ref`` (``alpine:3``, ``r.io/a@sha256:…``; for a frontend also
        ``oci-layout://STORE@sha256:…``, the client's) for ``platform``; a ``UserError``
        names a ``ref`` not found or not reached."""
        ...
