"""The exporter contract: turn a build's result into an image, a tarball or a directory.

Group ``llbkit.exporters``; the entry-point name is the ``--output type=`` word (``oci``, ``tar``).
Two stages, as in BuildKit: the engine constructs ``Exporter(ctx)`` once, then for each request
calls :meth:`Exporter.resolve` with the ``--output`` attributes, and runs the returned job:
:meth:`ExportJob.export` once the build succeeded, then :meth:`ExportJob.finalize` once every
exporter and cache exporter of the build has run (a push that must follow a cache export), then
:meth:`ExportJob.aclose` in every case.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llbkit.core.plugins.context import BuildResult, ClientIO, PluginContext
    from llbkit.core.plugins.imagestore import ImageStore
    from llbkit.core.plugins.progress import ProgressSink

__all__ = ["API_VERSION", "ExportInfo", "ExportJob", "Exporter", "ExportsBlobs", "InlineCache"]

API_VERSION = 2

#: (``platform`` such as ``linux/amd64``, the image's layer diff ids bottom first) -> the
#: records to embed in that image's config under ``moby.buildkit.cache.v0`` (JSON; the config
#: holds it base64-encoded, as Go marshals bytes), or ``None`` when none match its layers
InlineCache = Callable[[str, Sequence[str]], Awaitable[bytes | None]]


@dataclass(frozen=True)
class ExportInfo:
    """What an export job is told about the build besides its result.

    :param ref: the build's ref (the name ``Controller.status`` knows it by).
    :param client: the client's side; anything destined for its machine goes through it.
    :param progress: this export's step in the build's progress: statuses, logs, warnings
        (an accepted option that has no effect says so here).
    :param inline_cache: with ``--export-cache type=inline``, the cache to embed in the image
        config of each platform; ``None`` when none was asked for. An image exporter calls it
        once per image, with the image's layers; others ignore it.
    :param image_store: the worker's image store (containerd's), or ``None`` when the worker
        has none (the OCI worker) or cannot start; asking starts the worker if it is not.
    """

    ref: str
    client: ClientIO
    progress: ProgressSink
    inline_cache: InlineCache | None = None
    image_store: Callable[[], Awaitable[ImageStore | None]] | None = None


class Exporter(Protocol):
    """A named exporter; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(self, attrs: Mapping[str, str]) -> ExportJob:
        """Validate ``--output`` attributes (minus ``type``) and return a job for one export.

        Runs before the build starts, so a bad key fails fast. Must reject unknown keys with
        :class:`~llbkit.core.errors.UnknownOptionError` naming the key and the valid ones.

        :param attrs: the attributes exactly as the user gave them.
        """
        ...


class ExportJob(Protocol):
    """One export of one build, configured and ready to run."""

    @property
    def description(self) -> str:
        """The export's step in the build's progress (``exporting to oci image format``)."""
        ...

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        """Write ``result`` out; runs once after the build succeeds, while the result is held.

        Returns response metadata (``containerimage.digest``…) that ``--metadata-file``
        records.
        """
        ...

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        """Finish what must come after every exporter and cache exporter (a push); runs once
        after all of them succeeded. Returns more response metadata (often none)."""
        ...

    async def aclose(self) -> None:
        """Release what the job holds; runs last, also when the build failed."""


@runtime_checkable
class ExportsBlobs(Protocol):
    """An export job that may read its result's layers only as blobs (``layers``,
    ``blob_path``), never its files: when every exporter of a build does, an image the build
    only exports may stay unpulled (:mod:`llbkit.core.plugins.lazysource`)."""

    @property
    def blobs_only(self) -> bool:
        """Whether this export reads blobs only."""
        ...
