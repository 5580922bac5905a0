"""The worker contract: run processes in real containers.

Group ``llbkit.workers``; the entry-point name is the config section word (``oci`` for
``[worker.oci]``, ``containerd``). The engine prepares every mount as a local directory (or a
tmpfs/secret/socket spec), resolves the user in the rootfs, and hands the worker a complete
description; the worker only runs it.

An ExecOp's process runs with its output going to the step's log. Gateway containers and
``llbkit debug shell`` also need a process's standard streams (:class:`ProcessIO`), a terminal
(``ProcessSpec.tty``), and a second process started in a container that is still running
(:meth:`Executor.exec`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform, PluginContext
    from llbkit.core.plugins.progress import ProgressSink

__all__ = [
    "API_VERSION",
    "ByteReceiver",
    "ByteSender",
    "Executor",
    "MountSpec",
    "ProcessIO",
    "ProcessSpec",
    "WindowSize",
    "Worker",
]

API_VERSION = 2

MountKind = Literal["bind", "tmpfs", "secret", "ssh"]


@dataclass(frozen=True)
class MountSpec:
    """One mount of the container, already materialised by the engine.

    :param source: a local path (a snapshot directory, a secret file, an agent socket); unused
        for ``tmpfs``.
    :param options: kind-specific settings (``size`` for tmpfs).
    """

    dest: str
    kind: MountKind = "bind"
    source: Path | None = None
    readonly: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessSpec:
    """A process, with BuildKit's defaults already applied by the engine.

    :param user: the user as the definition names it (``app``, ``1000:1000``), for messages;
        ``uid``, ``gid`` and ``additional_gids`` are what the engine resolved it to in the
        rootfs's ``/etc/passwd`` and ``/etc/group``.
    :param tty: give the process a terminal: its output (both streams) arrives on
        ``ProcessIO.stdout``, its input is read from ``ProcessIO.stdin``.
    """

    args: Sequence[str]
    env: Sequence[str] = ()
    cwd: str = "/"
    user: str = ""
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()
    hostname: str = "buildkitsandbox"
    network: Literal["sandbox", "host", "none"] = "sandbox"
    security: Literal["sandbox", "insecure"] = "sandbox"
    extra_hosts: Sequence[tuple[str, str]] = ()
    ulimits: Sequence[tuple[str, int, int]] = ()
    cgroup_parent: str = ""
    readonly_rootfs: bool = False
    tty: bool = False


class ByteReceiver(Protocol):
    """Where a process's input comes from: ``receive()`` returns the next bytes and raises
    ``anyio.EndOfStream`` at the end (anyio's byte and memory streams fit)."""

    async def receive(self) -> bytes: ...


class ByteSender(Protocol):
    """Where a process's output goes (anyio's byte and memory streams fit)."""

    async def send(self, item: bytes) -> None: ...


@dataclass(frozen=True)
class WindowSize:
    """A terminal's size, for processes with ``tty``."""

    rows: int
    cols: int


class WindowSizes(Protocol):
    """Terminal size changes; ``receive()`` raises ``anyio.EndOfStream`` when there are no more."""

    async def receive(self) -> WindowSize: ...


@dataclass(frozen=True)
class ProcessIO:
    """A process's standard streams, when the caller wants them instead of the step's log.

    :param stdin: read until it ends, then the process's input is closed; ``None`` gives an
        empty input.
    :param stdout: the process's output (with ``tty``, all of it); ``None`` sends it to the
        progress log.
    :param stderr: the error stream (unused with ``tty``); ``None`` sends it to the log.
    :param resize: terminal size changes, applied while the process runs (``tty`` only).
    """

    stdin: ByteReceiver | None = None
    stdout: ByteSender | None = None
    stderr: ByteSender | None = None
    resize: WindowSizes | None = None


class Executor(Protocol):
    """A configured worker, able to run processes for builds."""

    @property
    def platforms(self) -> Sequence[Platform]:
        """Platforms this executor runs natively, the first being the default."""
        ...

    @property
    def labels(self) -> Mapping[str, str]:
        """Labels shown by ``llbkit debug workers`` (``org.mobyproject.buildkit.worker.*``)."""
        ...

    async def run(
        self,
        id: str,
        process: ProcessSpec,
        rootfs: Path,
        mounts: Sequence[MountSpec],
        progress: ProgressSink,
        *,
        io: ProcessIO | None = None,
        started: Callable[[], None] | None = None,
    ) -> int:
        """Start container ``id`` on ``rootfs`` with ``mounts``, run ``process`` in it until it
        exits, then remove the container.

        Runs once per ExecOp that missed the cache, and for gateway containers. Output goes to
        ``io`` where given, else to ``progress`` as it comes. ``started`` is called once the
        container runs (from then on :meth:`exec` may target ``id``). Returns the exit code;
        raising means the container could not be run at all. Cancellation must kill it.
        """
        ...

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        """Run another process in the running container ``id`` (started by :meth:`run`) and
        return its exit code; cancellation kills that process only.

        Raises :class:`~llbkit.core.errors.UserError` when no container ``id`` is running.
        """
        ...

    async def aclose(self) -> None:
        """Stop anything still running; runs when the engine shuts down."""


class Worker(Protocol):
    """A named worker backend; one instance per engine."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(self, config: Mapping[str, object]) -> Executor:
        """Validate the worker's config section (``[worker.oci]``) and start an executor.

        Runs once, when the engine first needs a process run; unknown keys are rejected by
        name.
        """
        ...
