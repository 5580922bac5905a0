"""The exporter conformance kit against ``local`` and ``tar``, plus their own behaviour."""

from __future__ import annotations

import io
import json
import tarfile
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import ConfigError
from llbkit.plugins.exporter_local.exporter import LocalExporter, TarExporter
from llbkit.sdk.testing import ExporterKit, make_context


class TestLocalExporter(ExporterKit):
    exporter_class = LocalExporter
    valid_attrs: ClassVar[dict[str, str]] = {"dest": "out"}

    def check_export(self, client, response):
        assert (client.tree_root / "out" / "hello.txt").read_text() == "hello\n"
        assert (client.tree_root / "out" / "dir" / "data.bin").read_bytes() == bytes(range(256))


class TestTarExporter(ExporterKit):
    exporter_class = TarExporter
    valid_attrs: ClassVar[dict[str, str]] = {"dest": "out.tar"}

    def check_export(self, client, response):
        with tarfile.open(fileobj=io.BytesIO(client.outputs["out.tar"])) as tar:
            assert tar.getnames() == ["dir", "dir/data.bin", "hello.txt"]
            member = tar.extractfile("dir/data.bin")
            assert member is not None and member.read() == bytes(range(256))


@pytest.mark.parametrize("exporter", [LocalExporter, TarExporter])
def test_dest_is_required(exporter):
    driver = exporter(make_context("x"))
    with pytest.raises(ConfigError, match="dest= is required"):
        anyio.run(driver.resolve, {})


def test_platform_split_must_be_boolean():
    driver = LocalExporter(make_context("local"))
    with pytest.raises(ConfigError, match="platform-split='maybe'"):
        anyio.run(driver.resolve, {"dest": "d", "platform-split": "maybe"})


def _export_nothing(tmp_path, metadata):
    """``type=local`` of a result with no filesystem (``FROM scratch``), as a frontend gives it."""
    from llbkit.core.plugins import BuildResult, ExportInfo
    from llbkit.sdk.testing import MemoryClientIO, RecordingProgress

    client = MemoryClientIO(tree_root=tmp_path / "client")
    driver = LocalExporter(make_context("local"))

    async def scenario():
        job = await driver.resolve({"dest": "out"})
        await job.export(BuildResult({}, metadata), ExportInfo("r", client, RecordingProgress()))

    anyio.run(scenario)
    return client.tree_root / "out"


def test_a_result_of_nothing_is_an_empty_directory(tmp_path):
    out = _export_nothing(tmp_path, {})
    assert out.is_dir() and not list(out.iterdir())


def test_platforms_of_nothing_are_an_empty_directory_each(tmp_path):
    listed = {"Platforms": [{"ID": "linux/amd64"}, {"ID": "linux/arm64"}]}
    out = _export_nothing(tmp_path, {"refs.platforms": json.dumps(listed).encode()})
    assert sorted(p.name for p in out.iterdir()) == ["linux_amd64", "linux_arm64"]
    assert not list((out / "linux_arm64").iterdir())


def test_a_platforms_folder_in_a_tarball_is_buildkits(tmp_path):
    """A result by platform in a tarball: each platform's folder is a made-up entry, 0755,
    root's, dated 1970, its header as Go writes one (BuildKit's tarball, byte for byte)."""
    from llbkit.core.plugins import BuildResult, ExportInfo
    from llbkit.sdk.testing import MemoryClientIO, RecordingProgress
    from llbkit.sdk.testing.results import layered_result

    listed = json.dumps({"Platforms": [{"ID": "linux/amd64"}]}).encode()

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    client = MemoryClientIO(tree_root=tmp_path / "client")

    async def scenario():
        driver = TarExporter(make_context("tar"))
        job = await driver.resolve({"dest": "out.tar"})
        with layered_result(tmp_path / "r", tree) as ref:
            result = BuildResult({"linux/amd64": ref}, {"refs.platforms": listed})
            await job.export(result, ExportInfo("r", client, RecordingProgress()))

    anyio.run(scenario)
    data = client.outputs["out.tar"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        first = tar.getmembers()[0]
    assert (first.name, first.mode, first.uid, first.gid, first.mtime) == (
        "linux_amd64",
        0o755,
        0,
        0,
        0,
    )
    assert data[:12] == b"linux_amd64/"
    assert data[329:345] == b"0000000\x000000000\x00"  # device numbers, as Go writes them
