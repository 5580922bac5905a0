"""The exporter conformance kit, run against this plugin, then its own behaviour."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import ConfigError
from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.exporter import <REPLACE:Name>Exporter
from llbkit.sdk.testing import ExporterKit, MemoryClientIO, make_context


class Test<REPLACE:Name>Exporter(ExporterKit):
    exporter_class = <REPLACE:Name>Exporter
    valid_attrs: ClassVar[Mapping[str, str]] = {"dest": "listing.json"}

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        listing = json.loads(client.outputs["listing.json"])
        assert listing == {"linux/amd64": ["dir/data.bin", "hello.txt"]}
        assert response == {"listing.files": "2"}


class Test<REPLACE:Name>ExporterWithSizes(ExporterKit):
    exporter_class = <REPLACE:Name>Exporter
    valid_attrs: ClassVar[Mapping[str, str]] = {"dest": "-", "sizes": "true"}

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        listing = json.loads(client.outputs["-"])
        assert listing == {"linux/amd64": {"dir/data.bin": 256, "hello.txt": 6}}


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({}, "dest= is required"), ({"dest": "x", "sizes": "yes"}, "sizes='yes' is not true")],
)
def test_options_are_checked_before_the_build(attrs: dict[str, str], message: str) -> None:
    driver = <REPLACE:Name>Exporter(make_context("<REPLACE:name>"))
    with pytest.raises(ConfigError, match=message):
        anyio.run(driver.resolve, attrs)
