"""The solver as a build sees it: laziness, caching, sharing, parallelism, failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.errors import UserError
from llbkit.core.plugins.context import PluginContext
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.core.solver.solver import BuildFailed
from llbkit.core.sources.local import LocalSource
from llbkit.sdk import llb

from .helpers import (
    PLATFORM,
    build,
    build_async,
    cached,
    files,
    logs,
    open_engine,
    ran,
    vertex_events,
)


class Tracker:
    in_flight = 0
    most = 0
    fetched: ClassVar[list[str]] = []
    cancelled: ClassVar[list[str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.in_flight = cls.most = 0
        cls.fetched = []
        cls.cancelled = []


class SlowJob:
    record_type = "regular"

    def __init__(self, identifier: str, attrs: dict[str, str]) -> None:
        self.identifier = identifier
        self.delay = float(attrs.get("slow.sleep", "0.2"))

    async def cache_key(self, client: Any) -> str:
        return f"slow:{self.identifier}"

    def discard(self) -> None:
        return None

    async def fetch(self, client: Any, dest: Path, progress: Any) -> None:
        Tracker.in_flight += 1
        Tracker.most = max(Tracker.most, Tracker.in_flight)
        try:
            progress.log(f"fetching {self.identifier}\n".encode())
            await anyio.sleep(self.delay)
        except anyio.get_cancelled_exc_class():
            Tracker.cancelled.append(self.identifier)
            raise
        finally:
            Tracker.in_flight -= 1
        Tracker.fetched.append(self.identifier)
        (dest / self.identifier.split("://")[1]).write_text("slow\n")


class SlowSource:
    api_version = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, identifier: str, attrs: dict[str, str], platform: Any) -> SlowJob:
        return SlowJob(identifier, attrs)


@pytest.fixture
def registry() -> PluginRegistry:
    Tracker.reset()
    return PluginRegistry.for_testing(
        {"llbkit.sources": {"slow": SlowSource, "local": LocalSource}}
    )


def slow(name: str, delay: float = 0.2) -> llb.State:
    return llb.source(f"slow://{name}", {"slow.sleep": str(delay)})


def test_builds_file_merge_and_diff(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        base = llb.scratch().file(llb.mkdir("/d", 0o755).mkfile("/d/a", 0o644, b"a"))
        upper = base.file(llb.mkfile("/d/b", 0o644, b"b").rm("/d/a"))
        extra = llb.scratch().file(llb.mkfile("/e", 0o644, b"e"))
        outcome = build(engine, llb.merge([extra, llb.diff(base, upper)]))
        assert files(engine, outcome) == {"d": "<dir>", "d/b": "b", "e": "e"}
        assert ran(outcome) == {
            "mkdir /d, mkfile /d/a",
            "mkfile /d/b, rm /d/a",
            "mkfile /e",
            "diff (mkdir /d, mkfile /d/a) -> (mkfile /d/b, rm /d/a)",
            "merge (mkfile /e, diff (mkdir /d, mkfile /d/a) -> (mkfile /d/b, rm /d/a))",
        }


def test_a_cached_result_needs_nothing_below_it(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        first = llb.scratch().file(llb.mkfile("/one", 0o644, b"1"))
        second = first.file(llb.mkfile("/two", 0o644, b"2"))
        build(engine, second)
        layers = len(engine.store.db.layer_ids())
        again = build(engine, second.file(llb.mkfile("/three", 0o644, b"3")))
        assert len(engine.store.db.layer_ids()) == layers + 1  # /three's alone
        # Nothing below the hit runs. As BuildKit shows a rebuild, each step is listed
        # cached, but the one without inputs, shown done: working out its key was its work.
        assert cached(again) == {"mkfile /two"}
        assert ran(again) == {"mkfile /one", "mkfile /three"}


def test_no_cache_and_ignore_cache_run_again(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        state = (
            llb.scratch().file(llb.mkfile("/a", 0o644, b"a")).file(llb.mkfile("/b", 0o644, b"b"))
        )
        build(engine, state)
        assert ran(build(engine, state, no_cache=True)) == {"mkfile /a", "mkfile /b"}
        marked = (
            llb.scratch()
            .file(llb.mkfile("/a", 0o644, b"a"))
            .file(llb.mkfile("/b", 0o644, b"b"), ignore_cache=True)
        )
        assert ran(build(engine, marked)) == {"mkfile /b"}


def test_keys_are_the_same_in_another_store(tmp_path: Path) -> None:
    state = llb.scratch().file(llb.mkdir("/x", 0o700).mkfile("/x/y", 0o600, b"y"))
    keys = []
    for root in ("one", "two"):
        with open_engine(tmp_path / root) as engine:
            keys.append(build(engine, state).result_key)
    assert keys[0] == keys[1]
    assert keys[0] is not None and keys[0].startswith("sha256:")


def test_a_key_keeps_what_went_into_it(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, llb.scratch().file(llb.mkfile("/a", 0o644, b"a")))
        rows = engine.store.db.conn.execute("SELECT explanation FROM keys").fetchall()
        explained = [json.loads(r[0]) for r in rows]
        assert {"vertex": "mkfile /a"}.items() <= explained[0].items()
        assert "op" in explained[0] and "inputs" in explained[0]
        assert outcome.result_key


def test_copy_is_keyed_by_the_paths_it_reads(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "read.txt").write_text("read\n")
    (ctx / "other.txt").write_text("other\n")
    state = llb.scratch().file(llb.copy(llb.local("ctx"), "/read.txt", "/copied.txt"))
    with open_engine(tmp_path / "root") as engine:
        build(engine, state, locals={"ctx": ctx})
        (ctx / "other.txt").write_text("changed, but not read\n")
        again = build(engine, state, locals={"ctx": ctx})
        assert "copy /read.txt /copied.txt" in cached(again)
        (ctx / "read.txt").write_text("read, changed\n")
        third = build(engine, state, locals={"ctx": ctx})
        assert "copy /read.txt /copied.txt" in ran(third)
        assert files(engine, third) == {"copied.txt": "read, changed\n"}


def test_concurrent_builds_share_a_vertex(tmp_path: Path, registry: PluginRegistry) -> None:
    shared = slow("shared", 0.3)
    one = llb.merge([shared, llb.scratch().file(llb.mkfile("/one", 0o644, b"1"))])
    two = llb.merge([shared, llb.scratch().file(llb.mkfile("/two", 0o644, b"2"))])
    outcomes = []
    with open_engine(tmp_path / "root", registry=registry) as engine:

        async def both() -> None:
            async def run(state: llb.State) -> None:
                data = state.marshal(PLATFORM).to_bytes()
                outcomes.append(await build_async(engine, data, EmbeddedClient()))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, one)
                tg.start_soon(run, two)

        anyio.run(both)
        assert Tracker.fetched == ["slow://shared"]
        for outcome in outcomes:
            # Each build saw the shared vertex's progress, its log included.
            assert "slow://shared" in vertex_events(outcome)
            assert any("fetching slow://shared" in text for _, text in logs(outcome))
        trees = sorted(sorted(files(engine, o)) for o in outcomes)
        assert trees == [["one", "shared"], ["shared", "two"]]


def test_max_parallelism_limits_running_vertices(tmp_path: Path, registry: PluginRegistry) -> None:
    state = llb.merge([slow(f"s{i}", 0.1) for i in range(6)])
    with open_engine(tmp_path / "root", registry=registry, max_parallelism=2) as engine:
        build(engine, state)
    assert len(Tracker.fetched) == 6
    assert Tracker.most == 2


def test_first_failure_cancels_the_rest(tmp_path: Path, registry: PluginRegistry) -> None:
    failing = llb.scratch().file(llb.mkfile("/no/such/dir/file", 0o644, b"x"))
    state = llb.merge([slow("long", 30), failing])
    with open_engine(tmp_path / "root", registry=registry) as engine:
        with pytest.raises(BuildFailed) as err:
            build(engine, state)
        assert err.value.name == "mkfile /no/such/dir/file"
        assert "parent directory does not exist" in str(err.value)
        assert Tracker.cancelled == ["slow://long"]
        assert not list(engine.store.tmp.glob("upper-*"))
    with open_engine(tmp_path / "root", registry=registry) as engine:
        outcome = build(engine, llb.scratch().file(llb.mkfile("/ok", 0o644, b"ok")))
        assert files(engine, outcome) == {"ok": "ok"}


def test_failure_carries_the_tail_of_the_log(tmp_path: Path) -> None:
    class Noisy(SlowJob):
        async def fetch(self, client: Any, dest: Path, progress: Any) -> None:
            for n in range(30):
                progress.log(f"line {n}\n".encode())
            raise UserError("it broke")

    class NoisySource(SlowSource):
        async def resolve(self, identifier: str, attrs: dict[str, str], platform: Any) -> Noisy:
            return Noisy(identifier, attrs)

    registry = PluginRegistry.for_testing({"llbkit.sources": {"noisy": NoisySource}})
    with (
        open_engine(tmp_path / "root", registry=registry) as engine,
        pytest.raises(BuildFailed) as err,
    ):
        build(engine, llb.source("noisy://x"))
    assert err.value.reason == "it broke"
    assert err.value.log_tail == [f"line {n}" for n in range(20, 30)]


def test_a_disabled_worker_is_said_clearly(tmp_path: Path) -> None:
    from llbkit.core.config import EngineConfig

    config = EngineConfig(worker={"enabled": False}, gc=False)
    with open_engine(tmp_path / "root", config=config) as engine, pytest.raises(BuildFailed) as err:
        build(engine, llb.scratch().run(args=["true"]).root())
    assert "[worker.oci] is disabled" in str(err.value)


def test_a_source_nearer_the_result_starts_first(tmp_path: Path, registry: PluginRegistry) -> None:
    """As BuildKit numbers them: the context a step copies from before the image two steps
    below it, whatever the order the definition lists them in."""
    deep = slow("deep", 0).file(llb.mkdir("/d")).file(llb.mkdir("/e"))
    result = deep.file(llb.copy(slow("near", 0), "/near", "/near"))
    with open_engine(tmp_path / "root", registry=registry) as engine:
        outcome = build(engine, result)
    first_started = []
    for event in outcome.events:
        name = getattr(event, "name", "")
        started = getattr(event, "started", None) and name.startswith("slow://")
        if started and name not in first_started:
            first_started.append(name)
    assert first_started == ["slow://near", "slow://deep"]
