"""Leased results: what running builds hold survives GC and prune run between and beside them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig, GCRule
from llbkit.core.control import Controller, PruneRequest
from llbkit.core.plugins.context import PluginContext
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.plugins.exporter_local.exporter import TarExporter
from llbkit.sdk import llb
from llbkit.sdk.testing.builds import run_build


class _SlowJob:
    record_type = "regular"

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        name, _, delay = identifier.split("://")[1].partition("@")
        self.name, self.delay = name, float(delay or 0)

    async def cache_key(self, client: Any) -> str:
        return f"slow:{self.identifier}"

    def discard(self) -> None:
        return None

    async def fetch(self, client: Any, dest: Path, progress: Any) -> None:
        await anyio.sleep(self.delay)
        (dest / self.name).write_text(f"{self.name}\n")


class _SlowSource:
    api_version = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, identifier: str, attrs: Any, platform: Any) -> _SlowJob:
        return _SlowJob(identifier)


def _state(n: int) -> llb.State:
    """A build of a few steps that pauses (a slow source) halfway, so other builds' GC runs
    while it holds intermediate results."""
    first = llb.source(f"slow://first{n}@0.05")
    state = llb.scratch()
    for step in range(4):
        state = state.file(llb.mkfile(f"/b{n}-{step}", 0o644, f"{n}.{step}\n".encode()))
    later = llb.source(f"slow://later{n}@{0.2 * (n + 1)}")
    merged = llb.merge([first, state, later])
    return merged.file(llb.copy(merged, f"/b{n}-0", f"/copy-{n}"))


def _names(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def test_four_builds_under_a_gc_that_fires_between_them_all_export_what_they_built(
    tmp_path: Path,
) -> None:
    registry = PluginRegistry.for_testing(
        {"llbkit.sources": {"slow": _SlowSource}, "llbkit.exporters": {"tar": TarExporter}}
    )
    # Keep nothing that is not held, and run after every build.
    config = EngineConfig(gc_rules=[GCRule(all=True, keep_bytes=1)], gc_interval=0)
    with Controller.open(tmp_path / "root", config, registry) as controller:

        async def build(n: int) -> None:
            data = _state(n).marshal(llb.Platform()).to_bytes()
            await run_build(
                controller,
                EmbeddedClient(),
                definition=data,
                exports=[("tar", {"dest": str(tmp_path / f"out-{n}.tar")})],
            )

        async def pruner(stop: anyio.Event) -> None:
            while not stop.is_set():
                await controller.prune(PruneRequest(all=True, keep_bytes=1))
                await anyio.sleep(0.01)

        async def main() -> None:
            stop = anyio.Event()
            async with anyio.create_task_group() as outer:
                outer.start_soon(pruner, stop)
                async with anyio.create_task_group() as builds:
                    for n in range(4):
                        builds.start_soon(build, n)
                stop.set()

        anyio.run(main)
        # GC and prune took everything nobody held any more: nothing is left once all ended.
        assert anyio.run(controller.disk_usage) == []
    for n in range(4):
        got = _names((tmp_path / f"out-{n}.tar").read_bytes())
        assert got == {
            f"first{n}": f"first{n}\n",
            **{f"b{n}-{step}": f"{n}.{step}\n" for step in range(4)},
            f"later{n}": f"later{n}\n",
            f"copy-{n}": f"{n}.0\n",
        }
