"""The conformance kits themselves: they pass on the doubles and catch broken plugins."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.core.plugins.worker import ProcessIO, ProcessSpec
from llbkit.sdk import llb
from llbkit.sdk.testing import (
    CacheBackendKit,
    FrontendKit,
    MemoryCacheBackend,
    RecordingProgress,
    ScriptedExecutor,
    ScriptedWorker,
    StaticFrontend,
)
from llbkit.sdk.testing.kit_worker import WorkerKit
from llbkit.sdk.testing.kits import run


class TestMemoryCacheBackend(CacheBackendKit):
    backend_class = MemoryCacheBackend

    def attrs(self, tmp_path):
        return {"name": str(tmp_path)}


class _Client:
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.read: list[str] = []

    async def read_file(self, context: str, path: str) -> bytes:
        self.read.append(f"{context}:{path}")
        return self.files[path]


class TestStaticFrontend(FrontendKit):
    frontend_class = StaticFrontend
    valid_attrs: ClassVar[Mapping[str, str]] = {"filename": "Buildfile"}

    @pytest.fixture(autouse=True)
    def _definition(self, monkeypatch):
        data = llb.image("busybox").marshal(llb.Platform()).to_bytes()
        monkeypatch.setattr(StaticFrontend, "definition", data)

    def client(self):
        return _Client({"Buildfile": b"FROM busybox\n"})


class TestScriptedWorker(WorkerKit):
    worker_class = ScriptedWorker
    valid_config: ClassVar[Mapping[str, object]] = {"exit_code": 3, "output": "kit-out\n"}
    rootfs = None


def test_scripted_worker_runs_when_given_a_rootfs(tmp_path):
    class WithRootfs(TestScriptedWorker):
        rootfs = tmp_path

    WithRootfs().test_runs_a_process_and_reports_its_exit_code(tmp_path)
    WithRootfs().test_exec_on_an_unknown_id_is_a_user_error(tmp_path)


class _Careless(ScriptedWorker):
    """A broken worker: exec on a container that does not exist answers 0."""

    async def resolve(self, config):
        executor = await super().resolve(config)
        executor.running.add("kit-no-such-container")
        return executor


def test_worker_kit_catches_an_exec_that_ignores_unknown_ids(tmp_path):
    class Broken(WorkerKit):
        worker_class = _Careless
        rootfs = tmp_path

    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        Broken().test_exec_on_an_unknown_id_is_a_user_error(tmp_path)


def test_scripted_exec_targets_a_run_in_progress():
    executor = ScriptedExecutor(lambda spec: (0, spec.args[0].encode()))
    send, receive = anyio.create_memory_object_stream[bytes](1)
    out: list[bytes] = []

    class Out:
        async def send(self, item: bytes) -> None:
            out.append(item)

    async def scenario() -> tuple[int, int]:
        started = anyio.Event()
        codes: list[int] = []

        async def first() -> None:
            io = ProcessIO(stdin=receive)
            codes.append(
                await executor.run(
                    "c",
                    ProcessSpec(["first"]),
                    Path("/"),
                    [],
                    RecordingProgress(),
                    io=io,
                    started=started.set,
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            second = await executor.exec("c", ProcessSpec(["second"]), ProcessIO(stdout=Out()))
            await send.aclose()
        return codes[0], second

    assert anyio.run(scenario) == (0, 0)
    assert out == [b"second"]
    with pytest.raises(UserError, match="no container c is running"):
        anyio.run(executor.exec, "c", ProcessSpec(["late"]), ProcessIO())


class _Lenient:
    """A broken plugin: it accepts any option silently."""

    api_version = 1

    def __init__(self, ctx):
        self.ctx = ctx

    async def resolve(self, attrs, direction="export"):
        return MemoryCacheBackend(self.ctx).stores.setdefault("lenient", None)


def test_kit_catches_a_plugin_that_ignores_unknown_options(tmp_path):
    class Broken(CacheBackendKit):
        backend_class = _Lenient

    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        Broken().test_rejects_unknown_option_by_name(tmp_path)


def test_kit_catches_a_wrong_contract_version():
    class Future(StaticFrontend):
        api_version = 2

    class Broken(FrontendKit):
        frontend_class = Future

    with pytest.raises(AssertionError, match="contract is v1"):
        Broken().test_declares_contract_version()


def test_frontend_double_reads_the_file_it_was_told_to():
    client = _Client({"Dockerfile": b""})
    job = run(StaticFrontend(None).resolve({"filename": "Dockerfile"}))  # type: ignore[arg-type]
    run(job.solve(client))
    assert client.read == ["dockerfile:Dockerfile"]
