"""Conformance kits: one per contract, subclassed by each plugin's own tests.

Each kit is a mix-in of ``test_*`` methods. A subclass named ``Test...`` sets the class attributes
the kit documents; pytest then runs the kit's checks against that plugin. What the checks hold a
plugin to is what core relies on when it calls the plugin.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins import cache_backend, exporter, frontend, source
from llbkit.core.plugins.context import BlobSource, BuildResult, Platform, PluginContext
from llbkit.core.plugins.exporter import ExportInfo
from llbkit.core.plugins.frontend import FrontendOutput
from llbkit.core.plugins.source import LayeredSourceJob, StackedSourceJob
from llbkit.sdk.testing._doubles import MemoryClientIO, RecordingProgress, make_context
from llbkit.sdk.testing._kit_helpers import BOGUS_KEY, run
from llbkit.sdk.testing._kit_helpers import assert_names_key as _assert_names_key
from llbkit.sdk.testing._kit_helpers import check_api_version as _check_api_version
from llbkit.sdk.testing.frontend_client import kit_frontend_client
from llbkit.sdk.testing.kit_worker import WorkerKit
from llbkit.sdk.testing.results import layered_result

__all__ = [
    "BOGUS_KEY",
    "CacheBackendKit",
    "ExporterKit",
    "FrontendKit",
    "SourceKit",
    "WorkerKit",
    "run",
]


class ExporterKit:
    """Checks for an exporter. Set ``exporter_class`` and ``valid_attrs``.

    The export receives what the engine gives: a result of real layers in a real store, seen
    only through the ``Result`` contract, so a plugin that uses anything else fails. Override
    :meth:`sample_tree` to export something other than a two-file tree.
    """

    exporter_class: ClassVar[type]
    valid_attrs: ClassVar[Mapping[str, str]] = {}
    #: ``[registry."host"]`` settings of the engine's registry access the exporter gets
    registries: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def plugin_context(self, tmp_path: Path) -> PluginContext:
        """What the engine constructs the exporter with."""
        return make_context("kit", state_dir=tmp_path, registries=self.registries)

    def sample_tree(self, root: Path) -> Path:
        tree = root / "tree"
        (tree / "dir").mkdir(parents=True)
        (tree / "hello.txt").write_text("hello\n")
        (tree / "dir" / "data.bin").write_bytes(bytes(range(256)))
        return tree

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.exporter_class, exporter.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.exporter_class(self.plugin_context(tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_attrs, BOGUS_KEY: "1"}))
        _assert_names_key(err)

    def test_exports_finalizes_and_closes(self, tmp_path: Path) -> None:
        driver = self.exporter_class(self.plugin_context(tmp_path))
        client = MemoryClientIO(tree_root=tmp_path / "client")
        progress = RecordingProgress()
        info = ExportInfo("kitref", client, progress)

        async def scenario() -> Mapping[str, str]:
            job = await driver.resolve(dict(self.valid_attrs))
            assert isinstance(job.description, str) and job.description, (
                "an export job names its step in the build's progress (description)"
            )
            try:
                with layered_result(tmp_path, self.sample_tree(tmp_path)) as ref:
                    result = BuildResult({"linux/amd64": ref})
                    response = dict(await job.export(result, info))
                    response.update(await job.finalize(info))
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
    #: what core writes as the index document: a JSON manifest carrying its own ``mediaType``
    index_document: ClassVar[bytes] = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {}

    def client(self, tmp_path: Path) -> MemoryClientIO:
        """The client side ``resolve`` is handed."""
        return MemoryClientIO(tree_root=tmp_path / "client")

    async def _open(self, tmp_path: Path, direction: cache_backend.Direction) -> Any:
        driver = self.backend_class(make_context("kit", state_dir=tmp_path))
        store = await driver.resolve(dict(self.attrs(tmp_path)), direction, self.client(tmp_path))
        assert not isinstance(store, cache_backend.EmbedInImage), (
            "this kit checks stores; an inline backend has none to check"
        )
        return store

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.backend_class, cache_backend.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.backend_class(make_context("kit", state_dir=tmp_path))
        attrs = {**self.attrs(tmp_path), BOGUS_KEY: "1"}
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve(attrs, "export", self.client(tmp_path)))
        _assert_names_key(err)

    def test_names_itself_and_its_blob_source(self, tmp_path: Path) -> None:
        async def scenario() -> tuple[object, object]:
            store = await self._open(tmp_path, "export")
            try:
                assert store.index_format in ("manifest", "config"), store.index_format
                return store.name, store.blob_source()
            finally:
                await store.aclose()

        name, source = run(scenario())
        assert isinstance(name, str) and name, "a store names itself for messages (name)"
        assert source is None or isinstance(source, BlobSource), (
            f"blob_source() returns None or a BlobSource, not {source!r}"
        )

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
                await store.write_index(self.index_document)
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
        assert index == self.index_document, "read_index returns what write_index was given"

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

    def test_resolves_valid_identifiers_into_complete_jobs(self, tmp_path: Path) -> None:
        driver = self._driver(tmp_path)
        for identifier, attrs in self.valid:
            job = run(driver.resolve(identifier, attrs, Platform()))
            # Everything the engine calls on a job, as the contract declares it.
            assert isinstance(job.record_type, str) and job.record_type
            for method in ("cache_key", "fetch", "discard"):
                assert callable(getattr(job, method, None)), f"{identifier}: no {method}()"
            if hasattr(job, "fetch_layers"):
                # A layered job: fetch_layers as LayeredSourceJob declares it (or, for one
                # that names its layers first, StackedSourceJob).
                assert callable(job.fetch_layers), f"{identifier}: fetch_layers is not callable"
                contract = LayeredSourceJob
                if hasattr(job, "diff_ids"):
                    assert callable(job.diff_ids), f"{identifier}: diff_ids is not callable"
                    contract = StackedSourceJob
                declared = inspect.signature(contract.fetch_layers).parameters
                given = inspect.signature(job.fetch_layers).parameters
                assert list(given) == list(declared)[1:], (
                    f"{identifier}: fetch_layers{tuple(given)} does not take {tuple(declared)[1:]}"
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
    """Checks for a frontend. Set ``frontend_class``, ``valid_attrs`` and ``files``: the local
    directories (``{"dockerfile": {"Dockerfile": b"..."}}``) the frontend reads.

    The frontend runs against the engine's own frontend client (a real store, solver and
    image resolver), as in a build; set ``registry`` to a ``host:port`` the image references of
    ``files`` name, if they name any.
    """

    frontend_class: ClassVar[type]
    valid_attrs: ClassVar[Mapping[str, str]] = {}
    files: ClassVar[Mapping[str, Mapping[str, bytes]]] = {}

    def test_declares_contract_version(self) -> None:
        _check_api_version(self.frontend_class, frontend.API_VERSION)

    def test_rejects_unknown_option_by_name(self, tmp_path: Path) -> None:
        driver = self.frontend_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_attrs, BOGUS_KEY: "1"}))
        _assert_names_key(err)

    def test_solve_returns_loadable_definitions(self, tmp_path: Path) -> None:
        from llbkit.core.llb import load_definition

        driver = self.frontend_class(make_context("kit", state_dir=tmp_path))

        async def scenario() -> FrontendOutput:
            job = await driver.resolve(dict(self.valid_attrs))
            async with kit_frontend_client(tmp_path, self.files) as client:
                output: FrontendOutput = await job.solve(client)
                return output

        output = run(scenario())
        assert output.definitions, "a frontend must return at least one definition"
        for platform, data in output.definitions.items():
            load_definition(data, source=f"frontend output for {platform}")
