"""The conformance kits themselves: they pass on the doubles and catch broken plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest

from llbkit.sdk import llb
from llbkit.sdk.testing import (
    CacheBackendKit,
    FrontendKit,
    MemoryCacheBackend,
    ScriptedWorker,
    StaticFrontend,
    WorkerKit,
)
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
