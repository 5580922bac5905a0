"""The worker contract: run an ExecOp's process in a real container.

Group ``llbkit.workers``; the entry-point name is the config section word (``oci`` for
``[worker.oci]``, ``containerd``). The engine prepares every mount as a local directory (or a
tmpfs/secret/socket spec) and hands the worker a complete description; the worker only runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform, PluginContext, ProgressSink

__all__ = ["API_VERSION", "Executor", "MountSpec", "ProcessSpec", "Worker"]

API_VERSION = 1

MountKind = Literal["bind", "tmpfs", "secret", "ssh"]


@dataclass(frozen=True)
class MountSpec:
    """One mount of the container, already materialised by the engine.

    :param source: a local path (a snapshot directory, a secret file, an agent socket); unused
        for ``tmpfs``.
    :param options: kind-specific settings (``size`` for tmpfs, ``uid``/``gid``/``mode``).
    """

    dest: str
    kind: MountKind = "bind"
    source: Path | None = None
    readonly: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessSpec:
    """The process of an ExecOp, with BuildKit's defaults already applied by the engine."""

    args: Sequence[str]
    env: Sequence[str] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = "buildkitsandbox"
    network: Literal["sandbox", "host", "none"] = "sandbox"
    security: Literal["sandbox", "insecure"] = "sandbox"
    extra_hosts: Sequence[tuple[str, str]] = ()
    ulimits: Sequence[tuple[str, int, int]] = ()
    cgroup_parent: str = ""
    readonly_rootfs: bool = False


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
        process: ProcessSpec,
        rootfs: Path,
        mounts: Sequence[MountSpec],
        progress: ProgressSink,
    ) -> int:
        """Run ``process`` on ``rootfs`` with ``mounts``, streaming its output to ``progress``.

        Runs once per ExecOp that missed the cache. Returns the exit code; raising means the
        container could not be run at all. Cancellation must kill the container.
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

        Runs once when the engine starts; unknown keys are rejected by name.
        """
        ...
