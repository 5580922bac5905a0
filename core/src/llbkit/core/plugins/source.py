"""The source contract: bring outside content (images, git, http, local dirs) into a build.

Group ``llbkit.sources``; the entry-point name is the identifier's scheme (``docker-image``,
``git``, ``local``, ``http``, ``https``, ``oci-layout``). Resolving parses a SourceOp's identifier
and attributes; the job then computes a portable cache key and, on a miss, fetches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform, PluginContext, ProgressSink

__all__ = ["API_VERSION", "Source", "SourceJob"]

API_VERSION = 1


class Source(Protocol):
    """A named source kind; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> SourceJob:
        """Parse a SourceOp (``identifier`` includes the scheme) and check its attributes.

        Runs when the solver loads the vertex, before any fetching. Unknown attribute keys of
        this source's own namespace (``git.*`` for git) are rejected by name.
        """
        ...


class SourceJob(Protocol):
    """One source vertex, parsed."""

    async def cache_key(self, client: ClientIO) -> str:
        """Return a key that is the same on every machine for the same content.

        Runs before :meth:`fetch`; a key that is already cached means no fetch at all.
        """
        ...

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        """Write the content into the empty directory ``dest``; runs only on a cache miss."""
