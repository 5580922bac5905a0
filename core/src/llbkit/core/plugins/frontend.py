"""The frontend contract: turn a build description (a Dockerfile...) into LLB.

Group ``llbkit.frontends``; the entry-point name is the ``--frontend`` word (``dockerfile.v0``).
A frontend never touches the client's disk: it reads files and solves definitions through the
:class:`FrontendClient` the engine gives it, which works the same embedded or behind a daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform, PluginContext, Result

__all__ = ["API_VERSION", "Frontend", "FrontendClient", "FrontendJob", "FrontendOutput"]

API_VERSION = 1


@dataclass(frozen=True)
class FrontendOutput:
    """What a frontend returns: a marshaled ``pb.Definition`` per platform, plus metadata.

    :param definitions: by platform string (``linux/amd64``); one entry for a single platform.
    :param metadata: e.g. ``containerimage.config`` (image config JSON) for the exporters.
    """

    definitions: Mapping[str, bytes]
    metadata: Mapping[str, bytes] = field(default_factory=dict)


class FrontendClient(Protocol):
    """The engine as a frontend sees it."""

    async def read_file(self, context: str, path: str) -> bytes:
        """Read ``path`` from the client's local directory ``context`` (``dockerfile``...)."""
        ...

    async def solve(self, definition: bytes) -> Result:
        """Build a marshaled definition now and return its result (e.g. to read a file from it)."""
        ...

    async def resolve_image_config(self, ref: str, platform: Platform) -> tuple[str, bytes]:
        """Return the manifest digest and the config JSON of image ``ref`` for ``platform``."""
        ...

    def warn(self, message: str) -> None:
        """Show a warning in the build's progress."""


class Frontend(Protocol):
    """A named frontend; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(self, attrs: Mapping[str, str]) -> FrontendJob:
        """Validate ``--opt`` attributes (``filename``, ``build-arg:K``...) and return a job.

        Runs before anything is read from the client. Unknown keys are rejected by name.
        """
        ...


class FrontendJob(Protocol):
    """One frontend request."""

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        """Produce the LLB to build; runs once per build."""
        ...
