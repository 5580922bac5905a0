"""The source contract: bring outside content (images, git, http, local dirs) into a build.

Group ``llbkit.sources``; the entry-point name is the identifier's scheme (``docker-image``,
``git``, ``local``, ``http``, ``https``, ``oci-layout``). Resolving parses a SourceOp's identifier
and attributes; the job then computes a portable cache key and, on a miss, fetches.

A job that brings an image's layers (``docker-image``, ``oci-layout``) is a
:class:`LayeredSourceJob`: one store layer per image layer, with its original blob, so exports
and pushes reuse the exact bytes. A driver that looks images up for frontends is also an
:class:`ImageResolver`.
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
]

API_VERSION = 2

#: ``image.resolvemode``: ask the registry, else use what is known (``default``); always ask
#: (``pull``); only what was resolved before (``local``)
ResolveMode = Literal["default", "pull", "local"]


class Source(Protocol):
    """A source kind; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> SourceJob:
        """Parse a SourceOp (``identifier`` includes the scheme) and check its attributes,
        when the solver loads the vertex; unknown keys of the source's own namespace (``git.*``
        for git) are rejected by name."""
        ...


class SourceJob(Protocol):
    """One source vertex, parsed."""

    @property
    def record_type(self) -> str:
        """What ``du`` calls the records this source makes: ``regular``, ``source.local``,
        ``source.git.checkout``, ``internal`` or ``frontend``."""
        ...

    async def cache_key(self, client: ClientIO) -> str:
        """Return a key that is the same on every machine for the same content.

        Runs before :meth:`fetch`; a key that is already cached means no fetch at all.
        """
        ...

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        """Write the content into the empty directory ``dest``; only on a cache miss."""

    def discard(self) -> None:
        """Drop what the job fetched for its key and no longer needs (a download whose result
        was cached); runs when no build uses the vertex any more."""


@runtime_checkable
class ShowsKeyWork(Protocol):
    """A job whose key takes work shown as a sub-task (``resolve REF``, as in BuildKit)."""

    @property
    def key_status(self) -> str:
        """Its name."""
        ...


@dataclass(frozen=True)
class FetchedLayer:
    """One image layer, unpacked by a :class:`LayeredSourceJob`.

    :param tree: the layer's files in the store's layer format, whiteouts included.
    :param blob: the verified blob it was unpacked from.
    :param diff_id: the uncompressed tar's digest from the config ("" if it lists none).
    :param source: where the blob can be mounted from when pushing (its repository).
    :param description: as BuildKit names it (``pulled from REF@DIGEST``).
    """

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
        """On a miss, instead of :meth:`fetch`: pull the layers (verified), unpack each into
        a new directory under ``stage``, bottom first, in the store's ``layer_format``
        (``overlay``: whiteouts as 0/0 devices and ``trusted.overlay.opaque``; ``oci``:
        ``.wh.`` files)."""
        ...


@dataclass(frozen=True)
class ImageConfig:
    """An image as a frontend needs it: manifest digest and config JSON."""

    digest: str
    config: bytes


@runtime_checkable
class ImageResolver(Protocol):
    """Looks up image configs by reference, without pulling layers."""

    async def resolve_image_config(
        self, ref: str, platform: Platform, mode: ResolveMode = "default"
    ) -> ImageConfig:
        """The image ``ref`` (``alpine:3``, ``reg.example/app@sha256:…``) for ``platform``;
        a :class:`~llbkit.core.errors.UserError` names a ``ref`` not found or not reached."""
        ...
