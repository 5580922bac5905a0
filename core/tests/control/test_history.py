"""The Controller's history: records of running and finished builds, and the events a
``listen_history`` reader is told as they happen (BuildKit's ``ListenBuildHistory``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller, SolveRequest, new_ref
from llbkit.core.control.controller import HistoryEvent
from llbkit.core.errors import UserError
from llbkit.core.plugins.context import PluginContext
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.sdk import llb

#: what a gated source's fetch waits for (set by each test)
GATE: dict[str, anyio.Event] = {}


class _GatedJob:
    record_type = "regular"

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier

    async def cache_key(self, client: Any) -> str:
        return f"gated:{self.identifier}"

    def discard(self) -> None:
        return None

    async def fetch(self, client: Any, dest: Path, progress: Any) -> None:
        progress.log(b"waiting\n")
        await GATE[self.identifier.removeprefix("gated://")].wait()
        progress.log(b"released\n")
        (dest / "done").write_text("done\n")


class _GatedSource:
    api_version = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, identifier: str, attrs: Any, platform: Any) -> _GatedJob:
        return _GatedJob(identifier)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    registry = PluginRegistry.for_testing({"llbkit.sources": {"gated": _GatedSource}})
    with Controller.open(tmp_path / "root", EngineConfig(gc=False), registry) as found:
        yield found


def _request(identifier: str) -> SolveRequest:
    data = llb.source(f"gated://{identifier}").marshal(llb.Platform()).to_bytes()
    return SolveRequest(ref=new_ref(), session=EmbeddedClient(), definition=data)


async def _events(controller: Controller, **kwargs: Any) -> list[HistoryEvent]:
    return [event async for event in controller.listen_history(early_exit=True, **kwargs)]


def test_a_listener_is_told_of_starts_ends_and_deletions_as_they_happen(
    controller: Controller,
) -> None:
    first, second = _request("first"), _request("second")
    GATE.clear()
    told: list[tuple[str, str, bool]] = []
    follower_told: list[tuple[str, str, bool]] = []

    async def follow(ref: str = "") -> None:
        async for event in controller.listen_history(ref=ref):
            (follower_told if ref else told).append(
                (event.type, event.record.ref, event.record.completed_at is not None)
            )

    async def until(check: Any) -> None:
        with anyio.fail_after(10):
            while not check():
                await anyio.sleep(0.01)

    async def main() -> None:
        GATE["first"], GATE["second"] = anyio.Event(), anyio.Event()
        GATE["first"].set()
        await controller.solve(first)  # finished before anyone listens
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(follow, second.ref)
            await until(lambda: told)
            assert told == [("complete", first.ref, True)]
            tg.start_soon(controller.solve, second)
            await until(lambda: len(told) == 2)
            assert told[1] == ("started", second.ref, False)

            # While it runs: listed as running, with what was asked; not deletable.
            (running,) = await controller.history(active_only=True)
            assert running.ref == second.ref and running.completed_at is None
            assert [(e.type, e.record.ref) for e in await _events(controller)] == [
                ("started", second.ref),
                ("complete", first.ref),
            ]
            assert [e.type for e in await _events(controller, active_only=True)] == ["started"]
            with pytest.raises(UserError, match="still running"):
                await controller.forget_history(second.ref)

            GATE["second"].set()
            await until(lambda: len(told) == 3)
            assert told[2] == ("complete", second.ref, True)
            assert await controller.history(active_only=True) == []
            await controller.forget_history(first.ref)
            await until(lambda: len(told) == 4)
            assert told[3] == ("deleted", first.ref, True)
            tg.cancel_scope.cancel()
        # A listener for one ref heard only of that build.
        assert follower_told == [("started", second.ref, False), ("complete", second.ref, True)]

    anyio.run(main)
    (kept,) = anyio.run(controller.history)
    assert kept.ref == second.ref
    assert kept.num_total_steps == 1 and kept.num_completed_steps == 1
    with pytest.raises(UserError, match=f"no build {first.ref} in the history"):
        anyio.run(controller.forget_history, first.ref)
    assert not (controller.history_dir / f"{first.ref}.jsonl").exists()


def test_a_finished_listing_is_oldest_first_and_a_bad_ref_is_refused(
    controller: Controller,
) -> None:
    GATE.clear()
    requests = [_request(f"n{n}") for n in range(3)]

    async def main() -> None:
        for n, request in enumerate(requests):
            GATE[f"n{n}"] = anyio.Event()
            GATE[f"n{n}"].set()
            await controller.solve(request)

    anyio.run(main)
    events = anyio.run(_events, controller)
    assert [(e.type, e.record.ref) for e in events] == [("complete", r.ref) for r in requests]
    one = anyio.run(lambda: _events(controller, ref=requests[1].ref))
    assert [e.record.ref for e in one] == [requests[1].ref]
    assert anyio.run(lambda: _events(controller, active_only=True)) == []
    with pytest.raises(UserError, match="invalid build ref"):
        anyio.run(lambda: _events(controller, ref="../x"))


def test_info_answers_the_same_shape_as_a_daemon() -> None:
    from llbkit.core import __version__
    from llbkit.core.control.controller import Info

    assert Info() == Info("llbkit", __version__, "")


def test_history_keeps_no_cache_credentials_a_frontend_was_handed() -> None:
    """buildctl hands its --import-cache entries to the frontend as ``cache-imports``."""
    import json

    from llbkit.core.control.controller import _without_secrets

    given = [{"Type": "s3", "Attrs": {"bucket": "b", "secret_access_key": "very-secret-key"}}]
    kept = _without_secrets({"cache-imports": json.dumps(given), "build-arg:A": "1"})
    assert "very-secret-key" not in json.dumps(kept)
    assert json.loads(kept["cache-imports"])[0]["Attrs"]["bucket"] == "b"
    assert kept["build-arg:A"] == "1"
    assert _without_secrets({"cache-imports": "not json"})["cache-imports"] == "***"


def test_history_keeps_max_entries_or_max_age_and_never_a_pinned_record(tmp_path: Path) -> None:
    """As BuildKit's history GC: a record goes once it is beyond the newest ``maxEntries`` *and*
    older than ``maxAge``; pinned records stay; each deletion is told to listeners."""
    import json
    import os
    import time

    GATE.clear()
    registry = PluginRegistry.for_testing({"llbkit.sources": {"gated": _GatedSource}})
    config = EngineConfig(gc=False, history_max_entries=2, history_max_age=3600)
    with Controller.open(tmp_path / "root", config, registry) as controller:
        requests = [_request(f"h{n}") for n in range(6)]

        async def build(n: int) -> None:
            GATE[f"h{n}"] = anyio.Event()
            GATE[f"h{n}"].set()
            await controller.solve(requests[n])

        for n in range(3):
            anyio.run(build, n)
        # Three records, all fresh: too few to be old, none goes.
        assert len(anyio.run(_events, controller)) == 3
        # Make the first two a day old; pin the first.
        for request in requests[:2]:
            path = controller.history_dir / f"{request.ref}.json"
            data = json.loads(path.read_text())
            data["completed_at"] = time.time() - 86400
            data["created_at"] = data["completed_at"] - 1
            path.write_text(json.dumps(data))
        anyio.run(lambda: controller.pin_history(requests[0].ref, True))
        # The records were last looked over (after the first build) more than 120 s ago.
        stamp = controller.history_dir / ".gc"
        assert stamp.exists()
        os.utime(stamp, (time.time() - 121, time.time() - 121))

        async def build_and_listen() -> list[HistoryEvent]:
            told: list[HistoryEvent] = []

            async def listen() -> None:
                async for event in controller.listen_history(active_only=True):
                    told.append(event)
                    if event.type == "deleted":
                        return

            async with anyio.create_task_group() as group:
                group.start_soon(listen)
                await anyio.sleep(0.1)
                await build(3)
            return told

        told = anyio.run(build_and_listen)
        assert ("deleted", requests[1].ref) in [(e.type, e.record.ref) for e in told]
        kept = [e.record.ref for e in anyio.run(_events, controller)]
        assert kept == [requests[0].ref, requests[2].ref, requests[3].ref]
        assert not (controller.history_dir / f"{requests[1].ref}.jsonl").exists()
        (pinned,) = [e.record for e in anyio.run(_events, controller) if e.record.pinned]
        assert pinned.ref == requests[0].ref
        anyio.run(lambda: controller.pin_history(requests[0].ref, False))
        anyio.run(build, 4)  # unpinned and old, but looked over less than 120 s ago: stays
        assert len(anyio.run(_events, controller)) == 4
        os.utime(stamp, (time.time() - 121, time.time() - 121))
        anyio.run(build, 5)  # now it goes too
        kept = [e.record.ref for e in anyio.run(_events, controller)]
        assert kept == [requests[2].ref, requests[3].ref, requests[4].ref, requests[5].ref]
        with pytest.raises(UserError, match="no build"):
            anyio.run(lambda: controller.pin_history(requests[1].ref, True))


def test_history_config_is_read_and_checked(tmp_path: Path) -> None:
    from llbkit.core.config import load_config
    from llbkit.core.errors import ConfigError

    path = tmp_path / "buildkitd.toml"
    assert load_config(None).history_max_entries == 50
    assert load_config(None).history_max_age == 48 * 3600
    path.write_text("[history]\nmaxAge = 60\nmaxEntries = 3\n")
    config = load_config(path)
    assert (config.history_max_age, config.history_max_entries) == (60, 3)
    assert "history.maxAge" not in config.unused
    for bad in ('maxAge = "1h"', "maxEntries = -1", "maxEntries = true", "keep = 1"):
        path.write_text(f"[history]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"history\."):
            load_config(path)
