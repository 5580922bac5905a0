"""The worker contract: run processes in real containers.

Group ``llbkit.workers``; the entry-point name is the config section word (``oci`` for
``[worker.oci]``, ``containerd``). The engine prepares every mount as a local directory (or a
tmpfs/secret/socket spec), resolves the user in the rootfs, and hands the worker a complete
description; the worker only runs it.

Gateway containers and a ``debug shell`` (to come) will also use a process's streams
(:mod:`.stdio`), a terminal (``ProcessSpec.tty``) and ``exec``; a worker without them refuses
them (``UserError``) and sets ``interactive = False`` in its kit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform, PluginContext
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.stdio import ProcessIO

__all__ = ["API_VERSION", "Executor", "MountSpec", "ProcessSpec", "Worker"]

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

    :param env: without a ``PATH``, the worker adds BuildKit's default one.
    :param user: the user as the definition names it, for messages; ``uid``, ``gid`` and
        ``additional_gids`` are what the engine resolved it to in the rootfs.
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

        Runs once per ExecOp that missed the cache. Output goes to ``io`` where given, else
        to ``progress`` as it comes. ``started`` is called once when the container runs,
        before this returns (then :meth:`exec` may target ``id``). Returns the exit code;
        raising means it could not run; an ``id`` already running is a UserError. Cancelling
        kills and removes it.
        """
        ...

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        """Run another process in the running container ``id`` (started by :meth:`run`) and
        return its exit code; cancellation kills that process only. Output ``io`` does not take
        goes to the log of the :meth:`run` that started the container.

        Raises :class:`~llbkit.core.errors.UserError` when no container ``id`` is running.
        """
        ...

    async def aclose(self) -> None:
        """Stop anything still running; runs when the engine shuts down."""


class Worker(Protocol):
    """A worker backend, one per engine; may also be :class:`.reaping.Reaping`."""

    api_version: ClassVar[int]

    def __init__(self, ctx: PluginContext) -> None: ...

    async def resolve(self, config: Mapping[str, object]) -> Executor:
        """Validate the worker's config section (``[worker.oci]``) and start an executor.

        Runs once, when the engine first needs a process run; unknown keys are rejected by
        name.
        """
        ...
