"""Test doubles for each contract: small, working plugins to test the code that calls plugins.

Like httpx's ``MockTransport``: real implementations of the contract with no outside world, so
core's solver and CLI tests (and a third party's) can run without a registry or a container.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.cache_backend import Direction
from llbkit.core.plugins.context import ClientIO, Platform, PluginContext
from llbkit.core.plugins.frontend import FrontendClient, FrontendOutput
from llbkit.core.plugins.progress import ProgressSink
from llbkit.core.plugins.stdio import ProcessIO
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.sdk.testing._doubles import MemoryCacheStore

__all__ = ["MemoryCacheBackend", "ScriptedExecutor", "ScriptedWorker", "StaticFrontend"]


class MemoryCacheBackend:
    """A cache backend whose stores live in a class-level dict, keyed by the ``name`` option."""

    api_version: ClassVar[int] = 3
    stores: ClassVar[dict[str, MemoryCacheStore]] = {}

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> MemoryCacheStore:
        # Core takes ``mode`` and the other attributes it reads out first: only ``name`` is ours.
        for key in attrs:
            if key != "name":
                raise UnknownOptionError(f"cache backend {self.ctx.name}", key, ("name",))
        name = attrs.get("name", "default")
        return self.stores.setdefault(name, MemoryCacheStore(name=f"memory {name}"))


@dataclass(frozen=True)
class _StaticJob:
    definition: bytes
    filename: str

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        if self.filename:
            await client.read_file("dockerfile", self.filename)
        return FrontendOutput({"linux/amd64": self.definition})


class StaticFrontend:
    """A frontend returning a fixed definition (set ``StaticFrontend.definition``); with
    ``filename=`` it first reads that file from the ``dockerfile`` context, as real ones do."""

    api_version: ClassVar[int] = 2
    definition: ClassVar[bytes] = b""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> _StaticJob:
        for key in attrs:
            if key != "filename":
                raise UnknownOptionError(f"frontend {self.ctx.name}", key, ("filename",))
        return _StaticJob(self.definition, attrs.get("filename", ""))


@dataclass
class ScriptedExecutor:
    """Runs nothing: answers each process with ``script(spec)`` -> (exit code, output bytes).

    Output goes where a real worker's would: to ``io.stdout`` when given, else to the log. A
    run given ``io.stdin`` reads it to its end first, so its container stays up while the caller
    holds the input open; ``exec`` targets a container only then, and is answered by the same
    script.
    """

    script: Callable[[ProcessSpec], tuple[int, bytes]]
    runs: list[ProcessSpec] = field(default_factory=list)
    execs: list[tuple[str, ProcessSpec]] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    #: each running container's log, where an exec without ``io.stdout`` writes
    _logs: dict[str, ProgressSink] = field(default_factory=dict, repr=False)

    @property
    def platforms(self) -> Sequence[Platform]:
        return [Platform()]

    @property
    def labels(self) -> Mapping[str, str]:
        return {"org.mobyproject.buildkit.worker.executor": "scripted"}

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
        if id in self.running:
            raise UserError(f"container {id} is already running in the scripted worker")
        self.runs.append(process)
        self.running.add(id)
        self._logs[id] = progress
        try:
            if started is not None:
                started()
            if io is not None and io.stdin is not None:
                with contextlib.suppress(anyio.EndOfStream):  # the input's end: go on
                    while True:
                        await io.stdin.receive()
            code, output = self.script(process)
            if output and io is not None and io.stdout is not None:
                await io.stdout.send(output)
            elif output:
                progress.log(output)
            return code
        finally:
            self.running.discard(id)
            self._logs.pop(id, None)

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        if id not in self.running:
            raise UserError(f"no container {id} is running in the scripted worker")
        self.execs.append((id, process))
        code, output = self.script(process)
        if output and io.stdout is not None:
            await io.stdout.send(output)
        elif output:
            self._logs[id].log(output)  # as the contract says: the run's log
        return code

    async def aclose(self) -> None:
        return None


class ScriptedWorker:
    """A worker whose executor is scripted by the ``exit_code`` and ``output`` config keys."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, config: Mapping[str, object]) -> ScriptedExecutor:
        for key in config:
            if key not in ("exit_code", "output"):
                raise UnknownOptionError(f"worker {self.ctx.name}", key, ("exit_code", "output"))
        code = config.get("exit_code", 0)
        if not isinstance(code, int):
            raise ConfigError(f"worker {self.ctx.name}: exit_code must be an integer")
        output = str(config.get("output", "")).encode()
        return ScriptedExecutor(lambda _spec: (code, output))
