"""The exporter contract: turn a build's result into an image, a tarball or a directory.

Group ``llbkit.exporters``; the entry-point name is the ``--output type=`` word (``oci``, ``tar``).
Two stages, as in BuildKit: the engine constructs ``Exporter(ctx)`` once, then for each request
calls :meth:`Exporter.resolve` with the ``--output`` attributes, and runs the returned job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import BuildResult, ClientIO, PluginContext

__all__ = ["API_VERSION", "ExportJob", "Exporter"]

API_VERSION = 1


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

    async def export(self, result: BuildResult, client: ClientIO) -> Mapping[str, str]:
        """Write ``result`` out; runs once after the build succeeds.

        Anything destined for the client's machine goes through ``client``. Returns response
        metadata (``containerimage.digest``…) that ``--metadata-file`` records.
        """
        ...

    async def aclose(self) -> None:
        """Release what the job holds; runs after :meth:`export`, also when the build failed."""
