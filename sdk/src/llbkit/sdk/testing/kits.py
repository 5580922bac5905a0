"""Conformance kits: one per contract, subclassed by each plugin's own tests.

Each kit is a mix-in of ``test_*`` methods. A subclass named ``Test...`` sets the class attributes
the kit documents; pytest then runs the kit's checks against that plugin. What the checks hold a
plugin to is what core relies on when it calls the plugin.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins import cache_backend, exporter, frontend, source, worker
from llbkit.core.plugins.context import BuildResult, Platform
from llbkit.core.plugins.frontend import FrontendOutput
from llbkit.sdk.testing._doubles import DirResult, MemoryClientIO, make_context

T = TypeVar("T")

BOGUS_KEY = "llbkit-conformance-no-such-option"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion, as the engine would await it."""
    return asyncio.run(coro)


def _check_api_version(factory: Any, version: int) -> None:
    declared = getattr(factory, "api_version", None)
    assert declared == version, (
        f"{factory!r} declares api_version={declared!r}, contract is v{version}"
    )


def _assert_names_key(err: pytest.ExceptionInfo[UnknownOptionError]) -> None:
    assert BOGUS_KEY in str(err.value), f"the message does not name the unknown key: {err.value}"
    assert "\n" not in str(err.value), "a user error must be one line"


class ExporterKit:
    """Checks for an exporter. Set ``exporter_class`` and ``valid_attrs``.

    Override :meth:`sample_tree` to export something other than a two-file tree.
    """

    exporter_class: ClassVar[type]
    valid_attrs: ClassVar[Mapping[str, str]] = {}

    def sample_tree(self, root: Path) -> Path:
        tree = root / "tree"
        (tree / "dir").mkdir(parents=True)
        (tree / "hello.txt").write_text("hello\n")
        (tree / "dir" / "data.bin").write_bytes(bytes(range(256)))
        return tree

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.exporter_class, exporter.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.exporter_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_attrs, BOGUS_KEY: "1"}))
        _assert_names_key(err)

    def test_exports_and_closes(self, tmp_path: Path) -> None:
        driver = self.exporter_class(make_context("kit", state_dir=tmp_path))
        client = MemoryClientIO(tree_root=tmp_path / "client")

        async def scenario() -> Mapping[str, str]:
            job = await driver.resolve(dict(self.valid_attrs))
            try:
                result = BuildResult({"linux/amd64": DirResult(self.sample_tree(tmp_path))})
                response: Mapping[str, str] = await job.export(result, client)
                return response
            finally:
                await job.aclose()

        response = run(scenario())
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in response.items())
        self.check_export(client, response)

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        """Override to assert what the export produced on the client."""


class CacheBackendKit:
    """Checks for a cache backend against a real server. Set ``backend_class`` and
    override :meth:`attrs` to point at the server the test started."""

    backend_class: ClassVar[type]

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {}

    def _open(self, tmp_path: Path, direction: cache_backend.Direction) -> Any:
        driver = self.backend_class(make_context("kit", state_dir=tmp_path))
        return driver.resolve(dict(self.attrs(tmp_path)), direction)

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.backend_class, cache_backend.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.backend_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.attrs(tmp_path), BOGUS_KEY: "1"}, "export"))
        _assert_names_key(err)

    def test_blobs_and_index_round_trip(self, tmp_path: Path) -> None:
        data = b"llbkit conformance blob\n" * 1000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

        async def produce() -> AsyncIterator[bytes]:
            yield data[:100]
            yield data[100:]

        async def scenario() -> tuple[bool, bool, bytes, bytes | None]:
            store = await self._open(tmp_path, "export")
            try:
                before = await store.has_blob(digest)
                await store.write_blob(digest, len(data), produce())
                await store.write_index(b'{"layers": []}')
            finally:
                await store.aclose()
            store = await self._open(tmp_path, "import")
            try:
                after = await store.has_blob(digest)
                read = b"".join([chunk async for chunk in store.read_blob(digest)])
                index = await store.read_index()
            finally:
                await store.aclose()
            return before, after, read, index

        before, after, read, index = run(scenario())
        assert not before and after
        assert read == data
        assert index == b'{"layers": []}'

    def test_missing_blob_is_key_error(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            store = await self._open(tmp_path, "import")
            try:
                async for _ in store.read_blob("sha256:" + "0" * 64):
                    pass
            finally:
                await store.aclose()

        with pytest.raises(KeyError):
            run(scenario())


class SourceKit:
    """Checks for a source. Set ``source_class``, ``scheme``, ``attr_namespace`` (``git`` for
    ``git.*`` attributes), ``valid`` (identifier, attrs) pairs and ``invalid`` identifiers that
    must be refused with one line."""

    source_class: ClassVar[type]
    scheme: ClassVar[str]
    attr_namespace: ClassVar[str]
    valid: ClassVar[Sequence[tuple[str, Mapping[str, str]]]] = ()
    invalid: ClassVar[Sequence[str]] = ()

    def _driver(self, tmp_path: Path) -> Any:
        return self.source_class(make_context(self.scheme, state_dir=tmp_path))

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.source_class, source.API_VERSION)

    def test_resolves_valid_identifiers(self, tmp_path: Path) -> None:
        driver = self._driver(tmp_path)
        for identifier, attrs in self.valid:
            job = run(driver.resolve(identifier, attrs, Platform()))
            assert callable(getattr(job, "cache_key", None)) and callable(
                getattr(job, "fetch", None)
            )

    def test_refuses_invalid_identifiers_in_one_line(self, tmp_path: Path) -> None:
        driver = self._driver(tmp_path)
        for identifier in self.invalid:
            with pytest.raises(UserError) as err:
                run(driver.resolve(identifier, {}, Platform()))
            assert "\n" not in str(err.value)

    def test_rejects_unknown_attribute_of_its_namespace(self, tmp_path: Path) -> None:
        identifier, attrs = self.valid[0]
        bogus = {**attrs, f"{self.attr_namespace}.{BOGUS_KEY}": "1"}
        with pytest.raises(UnknownOptionError) as err:
            run(self._driver(tmp_path).resolve(identifier, bogus, None))
        assert BOGUS_KEY in str(err.value)


class FrontendKit:
    """Checks for a frontend. Set ``frontend_class`` and ``valid_attrs``; override
    :meth:`client` to give the frontend the files it reads."""

    frontend_class: ClassVar[type]
    valid_attrs: ClassVar[Mapping[str, str]] = {}

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.frontend_class, frontend.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.frontend_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_attrs, BOGUS_KEY: "1"}))
        _assert_names_key(err)

    def client(self) -> Any:
        raise NotImplementedError("override client() to return a FrontendClient double")

    def test_solve_returns_loadable_definitions(self, tmp_path: Path) -> None:
        from llbkit.core.llb import load_definition

        driver = self.frontend_class(make_context("kit", state_dir=tmp_path))

        async def scenario() -> FrontendOutput:
            job = await driver.resolve(dict(self.valid_attrs))
            output: FrontendOutput = await job.solve(self.client())
            return output

        output = run(scenario())
        assert output.definitions, "a frontend must return at least one definition"
        for platform, data in output.definitions.items():
            load_definition(data, source=f"frontend output for {platform}")


class WorkerKit:
    """Checks for a worker. Set ``worker_class`` and ``valid_config``; set ``rootfs`` (a
    directory with ``/bin/sh``) to also run processes."""

    worker_class: ClassVar[type]
    valid_config: ClassVar[Mapping[str, object]] = {}
    rootfs: ClassVar[Path | None] = None

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.worker_class, worker.API_VERSION)

    def test_rejects_unknown_config_key_by_name(self, tmp_path: Path) -> None:
        driver = self.worker_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_config, BOGUS_KEY: "1"}))
        _assert_names_key(err)

    def test_runs_a_process_and_reports_its_exit_code(self, tmp_path: Path) -> None:
        if self.rootfs is None:
            pytest.skip("no rootfs given to the kit")
        from llbkit.core.plugins.worker import ProcessSpec
        from llbkit.sdk.testing._doubles import RecordingProgress

        driver = self.worker_class(make_context("kit", state_dir=tmp_path))
        progress = RecordingProgress()

        async def scenario() -> int:
            executor = await driver.resolve(dict(self.valid_config))
            try:
                spec = ProcessSpec(args=["/bin/sh", "-c", "echo kit-out; exit 3"])
                code: int = await executor.run(spec, self.rootfs, [], progress)
                return code
            finally:
                await executor.aclose()

        assert run(scenario()) == 3
        assert b"kit-out" in b"".join(data for _, data in progress.logs)
