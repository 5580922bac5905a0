"""The exporter conformance kit against ``local`` and ``tar``, plus their own behaviour."""

from __future__ import annotations

import io
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
