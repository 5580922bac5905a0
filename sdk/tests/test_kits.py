"""The conformance kits themselves: they pass on the doubles and catch broken plugins."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins.stdio import ProcessIO
from llbkit.core.plugins.worker import ProcessSpec
from llbkit.sdk import llb
from llbkit.sdk.testing import (
    CacheBackendKit,
    ExporterKit,
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

    async def read_file(self, context: str, path: str, **_: object) -> bytes:
        self.read.append(f"{context}:{path}")
        return self.files[path]


class TestStaticFrontend(FrontendKit):
    frontend_class = StaticFrontend
    valid_attrs: ClassVar[Mapping[str, str]] = {"filename": "Buildfile"}
    files: ClassVar[Mapping[str, Mapping[str, bytes]]] = {
        "dockerfile": {"Buildfile": b"FROM busybox\n"}
    }

    @pytest.fixture(autouse=True)
    def _definition(self, monkeypatch):
        data = llb.image("busybox").marshal(llb.Platform()).to_bytes()
        monkeypatch.setattr(StaticFrontend, "definition", data)


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

    log = RecordingProgress()

    async def scenario() -> tuple[int, int]:
        started = anyio.Event()
        codes: list[int] = []

        async def first() -> None:
            io = ProcessIO(stdin=receive)
            codes.append(
                await executor.run(
                    "c", ProcessSpec(["first"]), Path("/"), [], log, io=io, started=started.set
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            second = await executor.exec("c", ProcessSpec(["second"]), ProcessIO(stdout=Out()))
            await executor.exec("c", ProcessSpec(["third"]), ProcessIO())  # to the run's log
            await send.aclose()
        return codes[0], second

    assert anyio.run(scenario) == (0, 0)
    assert out == [b"second"]
    assert [data for _, data in log.logs] == [b"third", b"first"]
    with pytest.raises(UserError, match="no container c is running"):
        anyio.run(executor.exec, "c", ProcessSpec(["late"]), ProcessIO())


class _Lenient:
    """A broken plugin: it accepts any option silently."""

    api_version = 2

    def __init__(self, ctx):
        self.ctx = ctx

    async def resolve(self, attrs, direction, client):
        return MemoryCacheBackend(self.ctx).stores.setdefault("lenient", None)


def test_kit_catches_a_plugin_that_ignores_unknown_options(tmp_path):
    class Broken(CacheBackendKit):
        backend_class = _Lenient

    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        Broken().test_rejects_unknown_option_by_name(tmp_path)


class _Nameless(MemoryCacheBackend):
    """A broken plugin: its store has an empty name, so messages could not say which cache."""

    async def resolve(self, attrs, direction, client):
        store = await super().resolve(attrs, direction, client)
        store.name = ""
        return store


def test_kit_catches_a_store_without_a_name(tmp_path):
    class Broken(CacheBackendKit):
        backend_class = _Nameless

        def attrs(self, tmp_path):
            return {"name": f"nameless {tmp_path}"}

    with pytest.raises(AssertionError, match=r"names itself"):
        Broken().test_names_itself_and_its_blob_source(tmp_path)


def test_kit_catches_a_wrong_contract_version():
    class Old(StaticFrontend):
        api_version = 1

    class Broken(FrontendKit):
        frontend_class = Old

    with pytest.raises(AssertionError, match="contract is v2"):
        Broken().test_declares_contract_version()


class _ChainPeeker:
    """A broken exporter: it reads the engine's layer chain off the result, which the Result
    contract does not declare (so a daemon or another engine need not have it)."""

    api_version = 2

    def __init__(self, ctx):
        self.ctx = ctx

    async def resolve(self, attrs):
        if set(attrs) - {"dest"}:
            raise UnknownOptionError("exporter peek", sorted(set(attrs) - {"dest"})[0], ["dest"])
        return self

    async def export(self, result, info):
        return {"layers": str(len(result.single.chain))}

    description = "exporting a peek at the chain"

    async def finalize(self, info):
        return {}

    async def aclose(self):
        return None


def test_kit_catches_an_exporter_using_an_undeclared_result_attribute(tmp_path):
    class Broken(ExporterKit):
        exporter_class = _ChainPeeker
        valid_attrs: ClassVar[Mapping[str, str]] = {"dest": "x"}

    with pytest.raises(AttributeError, match="'chain' is not part of the Result contract"):
        Broken().test_exports_finalizes_and_closes(tmp_path)


class _PeekingFrontend:
    """A broken frontend: it solves, then reads the engine's layer chain off the result."""

    api_version = 2

    def __init__(self, ctx):
        self.ctx = ctx

    async def resolve(self, attrs):
        if attrs:
            raise UnknownOptionError("frontend peek", sorted(attrs)[0], [])
        return self

    async def solve(self, client):
        from llbkit.core.plugins.frontend import FrontendOutput

        data = llb.scratch().file(llb.mkfile("/a", 0o644, b"a")).marshal().to_bytes()
        result = await client.solve(data)
        return FrontendOutput({"linux/amd64": data}, {"layers": str(len(result.chain)).encode()})


def test_kit_catches_a_frontend_using_an_undeclared_result_attribute(tmp_path):
    class Broken(FrontendKit):
        frontend_class = _PeekingFrontend

    with pytest.raises(AttributeError, match="'chain' is not part of the Result contract"):
        Broken().test_solve_returns_loadable_definitions(tmp_path)


def test_kit_catches_a_layered_source_job_whose_fetch_layers_is_not_the_contracts(tmp_path):
    from llbkit.core.plugins.context import Platform
    from llbkit.sdk.testing import SourceKit

    class Job:
        record_type = "regular"

        async def cache_key(self, client):
            return "k"

        async def fetch(self, client, dest, progress):
            return None

        def discard(self):
            return None

        async def fetch_layers(self, client, stage):  # the contract's takes four
            return []

    class Layered:
        api_version = 2

        def __init__(self, ctx):
            self.ctx = ctx

        async def resolve(self, identifier, attrs, platform: Platform | None):
            return Job()

    class Broken(SourceKit):
        source_class = Layered
        scheme = "layered"
        valid = (("layered://x", {}),)

    with pytest.raises(AssertionError, match="fetch_layers"):
        Broken().test_resolves_valid_identifiers_into_complete_jobs(tmp_path)


def test_the_strict_result_has_exactly_the_contracts_members():
    import inspect

    from llbkit.core.plugins import Result
    from llbkit.sdk.testing import StrictResult

    declared = {
        name
        for name, _ in inspect.getmembers(Result)
        if not name.startswith("_") and name not in dir(object)
    }
    offered = {name for name in vars(StrictResult) if not name.startswith("_")}
    assert declared == offered == {"key", "mount", "layers", "blob_path", "blob_sources"}


def test_a_layered_result_exports_its_tree_through_the_contract(tmp_path):
    from llbkit.core.plugins import LayerOptions
    from llbkit.sdk.testing import layered_result

    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "a").write_text("a\n")
    (tree / "d" / "b").write_text("b\n")

    async def scenario():
        with layered_result(tmp_path, tree) as ref:
            layers = await ref.layers(LayerOptions())
            async with ref.mount() as root:
                seen = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            paths = [await ref.blob_path(d.digest) for d in layers]
            return layers, seen, paths

    layers, seen, paths = run(scenario())
    assert len(layers) == 2 and all(p.exists() for p in paths)
    assert seen == ["a", "d", "d/b"]


def test_frontend_double_reads_the_file_it_was_told_to():
    client = _Client({"Dockerfile": b""})
    job = run(StaticFrontend(None).resolve({"filename": "Dockerfile"}))  # type: ignore[arg-type]
    run(job.solve(client))
    assert client.read == ["dockerfile:Dockerfile"]
