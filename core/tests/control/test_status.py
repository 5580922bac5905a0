"""A build's status: readers attach before, during or after it; a slow one costs no memory and
misses nothing; every record reaches every reader in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller, SolveRequest, VertexLog, new_ref
from llbkit.core.control import status as status_module
from llbkit.core.errors import UserError
from llbkit.core.plugins.context import PluginContext
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.sdk import llb

LINES = 6000


class _ChattyJob:
    record_type = "regular"

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier

    async def cache_key(self, client: Any) -> str:
        return f"chatty:{self.identifier}"

    def discard(self) -> None:
        return None

    async def fetch(self, client: Any, dest: Path, progress: Any) -> None:
        for n in range(LINES):
            progress.log(f"line {n}\n".encode())
            if n % 500 == 0:
                await anyio.sleep(0)
        (dest / "done").write_text("done\n")


class _ChattySource:
    api_version = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, identifier: str, attrs: Any, platform: Any) -> _ChattyJob:
        return _ChattyJob(identifier)


@pytest.fixture
def controller(tmp_path: Path):
    registry = PluginRegistry.for_testing({"llbkit.sources": {"chatty": _ChattySource}})
    with Controller.open(tmp_path / "root", EngineConfig(gc=False), registry) as found:
        yield found


def _request(identifier: str = "chatty://a") -> SolveRequest:
    data = llb.source(identifier).marshal(llb.Platform()).to_bytes()
    return SolveRequest(ref=new_ref(), session=EmbeddedClient(), definition=data)


async def _read_all(controller: Controller, ref: str, delay: float = 0) -> list[Any]:
    await anyio.sleep(delay)
    found: list[Any] = []
    async for batch in controller.status(ref):
        found.extend(batch.events())
    return found


def _by_kind(events: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for event in events:
        found.setdefault(type(event).__name__, []).append(event)
    return found


def _log_lines(events: list[Any]) -> list[str]:
    text = b"".join(e.data for e in events if isinstance(e, VertexLog)).decode()
    return text.splitlines()


def test_readers_before_during_and_after_see_the_same_records(controller: Controller) -> None:
    request = _request()
    seen: dict[str, list[Any]] = {}

    async def main() -> None:
        async def read(name: str, delay: float) -> None:
            seen[name] = await _read_all(controller, request.ref, delay)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "before", 0)
            await anyio.sleep(0.05)  # attached before the build exists
            tg.start_soon(controller.solve, request)
            tg.start_soon(read, "during", 0.01)
        seen["after"] = await _read_all(controller, request.ref)

    anyio.run(main)
    # Batches group records by kind, as BuildKit's SolveStatus does; within a kind, order holds.
    kinds = [_by_kind(seen[name]) for name in ("before", "during", "after")]
    assert kinds[0] == kinds[1] == kinds[2]
    assert _log_lines(seen["after"]) == [f"line {n}" for n in range(LINES)]


def test_a_slow_reader_misses_nothing_and_the_build_does_not_wait(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small window, so most of the build's records are read back from the journal.
    monkeypatch.setattr(status_module, "WINDOW", 64)
    request = _request("chatty://slow")
    journal_reads: list[int] = []
    opened = status_module.BuildStatus._open_journal

    def counted(self: Any) -> Any:
        journal_reads.append(1)
        return opened(self)

    monkeypatch.setattr(status_module.BuildStatus, "_open_journal", counted)

    async def main() -> list[Any]:
        built = anyio.Event()

        async def build() -> None:
            await controller.solve(request)
            built.set()

        async def slow_reader() -> list[Any]:
            found: list[Any] = []
            async for batch in controller.status(request.ref):
                if not found:
                    # Stalled after its first batch until the build is over: a build that
                    # waited for its readers would never end, and this would time out.
                    with anyio.fail_after(30):
                        await built.wait()
                found.extend(batch.events())
                await anyio.sleep(0.002)  # slower than the build writes
            return found

        result: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def run_reader() -> None:
                result.extend(await slow_reader())

            tg.start_soon(run_reader)
            await anyio.sleep(0.02)
            tg.start_soon(build)
        return result

    events = anyio.run(main)
    # Nothing missed: the records past the window came back from the journal.
    assert _log_lines(events) == [f"line {n}" for n in range(LINES)]
    assert journal_reads


def test_a_ref_is_one_build(controller: Controller) -> None:
    request = _request("chatty://once")
    anyio.run(controller.solve, request)
    with pytest.raises(UserError, match="already running or done"):
        anyio.run(controller.solve, request)


def test_a_reader_of_a_ref_that_never_builds_leaves_nothing_behind(
    controller: Controller,
) -> None:
    async def main() -> None:
        with anyio.move_on_after(0.1):
            async for _ in controller.status("never-built"):
                raise AssertionError("no build, no records")

    anyio.run(main)
    assert "never-built" not in controller.board._builds


def test_a_step_started_again_starts_a_new_batch_so_its_first_start_is_seen(
    tmp_path: Path,
) -> None:
    """A client keeps a batch's last record of a step: a finished step shown running again
    (an unpulled image's blob an export downloads) must not hide when it first ran."""
    from llbkit.core.plugins.progress import Vertex, VertexStatus

    events = [
        Vertex("sha256:a", "FROM", started=1.0),
        Vertex("sha256:a", "FROM", started=1.0, completed=2.0),
        Vertex("sha256:b", "exporting", started=3.0),
        Vertex("sha256:a", "FROM", started=4.0),
        VertexStatus("sha256:blob", "sha256:a", 4.5, current=3, total=3, completed=4.5),
        Vertex("sha256:a", "FROM", started=4.0, completed=5.0),
        Vertex("sha256:b", "exporting", started=3.0, completed=6.0),
    ]

    async def batches() -> list[list[Any]]:
        status = status_module.BuildStatus("ref", tmp_path / "journal")
        status.start()
        for event in events:
            status.emit(event)
        status.finish()
        return [list(batch.events()) async for batch in status.read()]

    got = anyio.run(batches)
    assert [e for batch in got for e in batch] == events
    firsts = [
        [e.started for e in batch if isinstance(e, Vertex) and e.digest == "sha256:a"]
        for batch in got
    ]
    assert [1.0, 1.0] in firsts and [4.0, 4.0] in firsts
