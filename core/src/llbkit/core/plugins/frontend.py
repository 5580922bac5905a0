"""The frontend contract: turn a build description (a Dockerfile...) into LLB.

Group ``llbkit.frontends``; the entry-point name is the ``--frontend`` word (``dockerfile.v0``).
A frontend never touches the client's disk: it reads files, resolves images and solves
definitions through the :class:`FrontendClient` the engine gives it, which works the same
embedded or behind a daemon (and, for ``gateway.v0``, over its gRPC API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import PluginContext, Result
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.source import ImageResolver

__all__ = [
    "API_VERSION",
    "FileStat",
    "Frontend",
    "FrontendClient",
    "FrontendJob",
    "FrontendOutput",
]

API_VERSION = 2


@dataclass(frozen=True)
class FrontendOutput:
    """What a frontend returns: a marshaled ``pb.Definition`` per platform, plus metadata.

    :param definitions: by platform string (``linux/amd64``); one entry for a single platform.
    :param metadata: e.g. ``containerimage.config`` (image config) for the exporters.
    """

    definitions: Mapping[str, bytes]
    metadata: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class FileStat:
    """A file of a result, as gateway's ``StatFile`` and ``ReadDir`` describe it.

    :param mode: Go's ``os.FileMode`` bits as BuildKit sends them (type and permissions).
    :param mtime: nanoseconds since the epoch.
    """

    path: str
    mode: int
    size: int
    mtime: int
    uid: int = 0
    gid: int = 0
    linkname: str = ""


class FrontendClient(Protocol):
    """The engine as a frontend sees it."""

    async def read_file(
        self, context: str, path: str, *, progress: Callable[[int], None] | None = None
    ) -> bytes:
        """``path`` from the client's local directory ``context``; UserError if missing."""
        ...

    async def read_files(
        self, context: str, paths: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> dict[str, bytes]:
        """The files among ``paths`` in local directory ``context`` (links followed in it), in
        one transfer; UserError if it cannot be read. ``progress(n)``: bytes crossed from a
        daemon's client, as ``ClientIO.sync_local`` counts them."""
        ...

    async def solve(self, definition: bytes) -> Result:
        """Build a marshaled definition now; the result is held until the build ends."""
        ...

    async def read_ref_file(
        self, ref: Result, path: str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Read (part of) a file of a solved result (gateway's ``ReadFile``)."""
        ...

    async def read_dir(self, ref: Result, path: str, include: str = "") -> Sequence[FileStat]:
        """The entries of a directory of a solved result, sorted by name; ``include`` is a
        shell pattern the names must match (gateway's ``ReadDir``)."""
        ...

    async def stat_file(self, ref: Result, path: str) -> FileStat:
        """One file of a solved result (gateway's ``StatFile``)."""
        ...

    def inputs(self) -> Mapping[str, bytes]:
        """Definitions the client passed by name (BuildKit's ``FrontendInputs``), e.g. a named
        context ``context:base=input:base``."""
        ...

    @property
    def images(self) -> ImageResolver:
        """Image configs by reference, for ``FROM`` and ``COPY --from=<image>``."""
        ...

    def warn(
        self,
        message: str,
        *,
        detail: Sequence[str] = (),
        url: str = "",
        source: str = "",
    ) -> None:
        """Show a warning in the build's progress; ``source`` says where it comes from
        (``Dockerfile:12``)."""

    def step(self, name: str, key: str = "") -> AbstractAsyncContextManager[ProgressSink]:
        """Show a step of the frontend's own work while the block runs (``[internal] load
        metadata for …``); the sink reports its sub-tasks. Steps of one name and ``key`` (a
        platform...) are one step."""
        ...


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
