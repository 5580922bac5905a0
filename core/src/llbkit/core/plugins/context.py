"""What every driver is handed and what it hands back: the vocabulary the contracts share.

Kept free of engine types so that a plugin written against contract v1 keeps importing when the
engine changes. Nothing here assumes the client's files are on this machine: anything that comes
from or goes to the client passes through :class:`ClientIO`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BuildResult",
    "ByteSink",
    "ClientIO",
    "Platform",
    "PluginContext",
    "ProgressEvent",
    "ProgressSink",
    "Result",
]


@dataclass(frozen=True)
class Platform:
    """An OCI platform, as LLB's ``pb.Platform`` carries it."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"


@dataclass(frozen=True)
class ProgressEvent:
    """One change in a build's progress, as ``llbkit_on_progress`` observers receive it.

    :param kind: ``vertex`` (started, completed, cached or failed), ``status``, ``log`` or
        ``warning``, mirroring BuildKit's ``SolveStatus`` parts.
    :param vertex: the digest of the vertex the event belongs to.
    :param data: the kind's fields (``name``, ``started``, ``completed``, ``cached``, ``error``,
        ``stream``, ``msg``...), JSON-compatible.
    """

    kind: str
    vertex: str
    timestamp: float
    data: Mapping[str, Any] = field(default_factory=dict)


class ProgressSink(Protocol):
    """Where a driver reports what it is doing; the engine turns calls into progress events."""

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        """Report a sub-task (a layer download, "exporting layers"); call again to update it."""

    def log(self, data: bytes, *, stream: int = 1) -> None:
        """Append output (``stream`` 1 for stdout, 2 for stderr) to the current step's log."""

    def warn(self, message: str) -> None:
        """Attach a warning to the current step."""


@dataclass(frozen=True)
class PluginContext:
    """Handed to a driver's constructor once per engine: who it is, its config, where it may write.

    :param name: the entry-point name the driver was chosen by (``oci``, ``s3``...).
    :param distribution: ``"<dist> <version>"`` that provides it, for messages.
    :param config: the driver's own section of the engine config (e.g. ``[worker.oci]``); the
        engine adds ``registry``, the ``[registry."host"]`` tables every driver that talks to a
        registry honours (``mirrors``, ``http``, ``insecure``).
    :param state_dir: a directory under the engine's root that belongs to this driver alone.
    """

    name: str
    distribution: str
    config: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None


@runtime_checkable
class Result(Protocol):
    """One output of a solved vertex: a filesystem tree with a portable key.

    ``key`` is the same on every machine for the same inputs (a cache key digest), so a result can
    be named in remote caches and build history.
    """

    @property
    def key(self) -> str:
        """The portable cache key of this result (``sha256:…``)."""
        ...

    def mount(self) -> AbstractAsyncContextManager[Path]:
        """Give read-only access to the tree as a local directory for the duration of the block."""
        ...


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: one result, or one per platform, plus exporter metadata.

    :param refs: results by platform string (``linux/amd64``); a single-platform build has one.
    :param metadata: frontend-provided data such as ``containerimage.config`` (JSON bytes).
    """

    refs: Mapping[str, Result]
    metadata: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def single(self) -> Result | None:
        """The only result, or ``None`` when the build is multi-platform or empty."""
        return next(iter(self.refs.values())) if len(self.refs) == 1 else None


class ByteSink(Protocol):
    """An open byte stream towards the client (a file it chose, or its standard output)."""

    async def write(self, data: bytes) -> None:
        """Send more bytes."""


class ClientIO(Protocol):
    """The client's side of a build. Embedded, it is this process; with a daemon, a session.

    Drivers never open client paths themselves: a daemon's exporter writing ``dest=out.tar``
    must reach the client's disk, not its own.
    """

    def open_output(self, dest: str) -> AbstractAsyncContextManager[ByteSink]:
        """Open ``dest`` (``-`` for stdout) on the client; the file appears whole or not at all."""
        ...

    async def write_tree(self, dest: str, tree: Path) -> None:
        """Copy a local tree into directory ``dest`` on the client."""

    async def secret(self, id: str) -> bytes:
        """Fetch a secret the client provides (``--secret id=…``); raises if it has none."""
        ...

    def layout_blob(
        self, store: str, digest: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob of the OCI layout the client named ``store`` (``--oci-layout``)."""
        ...

    async def ssh_agent(self, id: str) -> Path:
        """A local socket speaking the SSH agent protocol for ``--ssh id``; raises if none."""
        ...

    def local_identity(self, name: str) -> str:
        """A stable name for the client's directory ``name`` (``--local name=path``).

        The engine keeps one mirror per identity, so a rebuild transfers only what changed.
        Raises :class:`~llbkit.core.errors.UserError` if the client has no such directory.
        """
        ...

    async def sync_local(
        self,
        name: str,
        dest: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
    ) -> None:
        """Make ``dest`` (which holds the previous sync, or nothing) mirror directory ``name``.

        Only changed files travel; a changed file is replaced, never modified in place.
        ``follow_paths`` are symlinks whose targets are included too.
        """
