"""Leased results: what running builds hold survives GC and prune run between and beside them."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterable
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
            ended_at.append(time.monotonic())

        # When layers went, and when builds ended: GC and prune must act while builds run.
        deleted_at: list[float] = []
        ended_at: list[float] = []
        delete_layer = controller.store.delete_layer

        def recorded(layer: int) -> bool:
            gone = delete_layer(layer)
            if gone:
                deleted_at.append(time.monotonic())
            return gone

        controller.store.delete_layer = recorded  # type: ignore[method-assign]

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
        # GC and prune took what finished builds let go while others still ran.
        assert deleted_at and min(deleted_at) < sorted(ended_at)[-2]
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


def test_what_a_burst_of_adds_took_is_written_once_the_burst_is_over() -> None:
    """``du`` in another process reads the written rows: a build's last layers must get there
    even when no later add comes to carry them."""
    import threading
    import time

    from llbkit.core.cache.leases import WRITE_EVERY, LeaseTable

    written: dict[str, set[int]] = {}

    def on_add(name: str, layers: Iterable[int]) -> None:
        written.setdefault(name, set()).update(layers)

    table = LeaseTable(threading.RLock(), on_add=on_add)
    lease = table.lease("build-1")
    lease.add([1])
    lease.add([2, 3])  # within WRITE_EVERY of the first: batched
    time.sleep(WRITE_EVERY * 3)
    assert written == {"build-1": {1, 2, 3}}
    lease.add([4])  # the burst is over: written at once
    lease.add([5])
    table.close()
    time.sleep(WRITE_EVERY * 2)
    assert written == {"build-1": {1, 2, 3, 4}}  # nothing is written once the table is closed


def test_a_flattening_the_store_already_has_joins_the_build_lease(tmp_path: Path) -> None:
    from llbkit.core.cache.store import Store
    from llbkit.core.cache.usage import prune

    with Store.open(tmp_path / "root", layer_format="oci") as store:

        def commit(name: str, parent: int | None = None) -> int:
            tree = store.stage() / "t"
            tree.mkdir()
            (tree / name).write_text(name)
            return store.commit_layer(tree, parent=parent, description=name)

        a = commit("a")
        b = commit("b", a)
        store.flatten((a, b))  # made earlier, outside any build
        with store.view((a, b)) as tree:  # a view shows that flattening, held while shown
            prune(store, all=True)
            assert sorted(p.name for p in tree.iterdir()) == ["a", "b"]
        a = commit("a")
        b = commit("b", a)
        store.flatten((a, b))
        lease = store.lease("build")
        with lease.bound():
            flat = store.flatten((a, b))  # a build finds it and mounts it
            assert flat in lease.layers
            prune(store, all=True)
            assert store.layer_path(flat).is_dir()


def test_a_cache_hit_is_held_from_the_instant_it_is_found(tmp_path: Path) -> None:
    """GC measures the store, then deletes: a build that finds a result in between holds it,
    and the deletion sees that (as BuildKit's lease binds the ref before anything can use it)."""
    from llbkit.core.cache.store import Store
    from llbkit.core.cache.usage import _prune, disk_usage

    with Store.open(tmp_path / "root", layer_format="oci") as store:
        tree = store.stage() / "t"
        tree.mkdir()
        (tree / "f").write_text("f")
        layer = store.commit_layer(tree, description="made earlier")
        store.save_result("result", (layer,))
        store.link_key("key", "result", "step", "{}")
        measured = disk_usage(store)  # GC's view: nothing is in use
        assert [r.in_use for r in measured] == [False]
        lease = store.lease("build")
        with lease.bound():
            assert store.lookup("key") == ("result", (layer,))
            removed, _ = _prune(
                store, lambda r: True, measured, all=True, keep_duration=0, keep_bytes=0
            )
            assert removed == []
            assert store.layer_path(layer).is_dir()
        lease.release()
        removed, _ = _prune(
            store, lambda r: True, disk_usage(store), all=True, keep_duration=0, keep_bytes=0
        )
        assert [r.description for r in removed] == ["made earlier"]


def test_a_step_two_builds_share_stays_held_for_the_one_that_ends_last(tmp_path: Path) -> None:
    registry = PluginRegistry.for_testing(
        {"llbkit.sources": {"slow": _SlowSource}, "llbkit.exporters": {"tar": TarExporter}}
    )
    config = EngineConfig(gc_rules=[GCRule(all=True, keep_bytes=1)], gc_interval=0)
    shared = llb.source("slow://shared@0.2")
    first = llb.merge([shared, llb.scratch().file(llb.mkfile("/a", 0o644, b"a\n"))])
    second = llb.merge([shared, llb.source("slow://late@1.0")])
    with Controller.open(tmp_path / "root", config, registry) as controller:

        async def build(state: llb.State, name: str, delay: float) -> None:
            await anyio.sleep(delay)
            await run_build(
                controller,
                EmbeddedClient(),
                definition=state.marshal(llb.Platform()).to_bytes(),
                exports=[("tar", {"dest": str(tmp_path / f"{name}.tar")})],
            )

        async def main() -> None:
            async with anyio.create_task_group() as builds:
                builds.start_soon(build, first, "first", 0)
                builds.start_soon(build, second, "second", 0.05)  # joins the shared step

        anyio.run(main)
    assert _names((tmp_path / "first.tar").read_bytes()) == {"shared": "shared\n", "a": "a\n"}
    assert _names((tmp_path / "second.tar").read_bytes()) == {
        "shared": "shared\n",
        "late": "late\n",
    }


def test_a_daemon_answers_before_it_collects_garbage_and_is_told_when_that_fails(
    tmp_path: Path,
) -> None:
    """With ``gc_after_answer`` set (llbkitd), a build returns while its collection still
    runs; a failed collection is told, not raised into anyone's build; closing waits."""
    registry = PluginRegistry.for_testing({"llbkit.exporters": {"tar": TarExporter}})
    config = EngineConfig(gc_rules=[GCRule(all=True, keep_bytes=1)], gc_interval=0)
    told: list[BaseException] = []
    release = anyio.Event()
    with Controller.open(tmp_path / "root", config, registry) as controller:
        controller.gc_after_answer = told.append
        collecting = threading.Event()
        finished = threading.Event()

        def slow_gc(*, force: bool = False) -> list[Any]:
            collecting.set()
            assert finished.wait(10)
            raise OSError("disk gone")

        controller.maybe_gc = slow_gc  # type: ignore[method-assign]

        async def main() -> None:
            data = llb.scratch().file(llb.mkfile("/f", 0o644, b"f\n")).marshal(llb.Platform())
            await run_build(
                controller,
                EmbeddedClient(),
                definition=data.to_bytes(),
                exports=[("tar", {"dest": str(tmp_path / "out.tar")})],
            )
            release.set()

        anyio.run(main)
        assert release.is_set() and collecting.wait(10) and not told
        finished.set()
    assert [str(err) for err in told] == ["disk gone"]
