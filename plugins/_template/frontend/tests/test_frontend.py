"""The frontend conformance kit, run against this plugin, then a real build of its output."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import ConfigError, UserError
from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.frontend import <REPLACE:Name>Frontend, parse
from llbkit.sdk.testing import FrontendKit, kit_frontend_client, make_context

FILES = {"dockerfile": {"Buildfile": b"greeting.txt: hello from a frontend\n"}}


class Test<REPLACE:Name>Frontend(FrontendKit):
    frontend_class = <REPLACE:Name>Frontend
    valid_attrs: ClassVar[Mapping[str, str]] = {"mode": "600"}
    files: ClassVar[Mapping[str, Mapping[str, bytes]]] = FILES


def test_the_engine_builds_what_it_returns(tmp_path: Path) -> None:
    """Solve the returned definition with the engine and read the file it made."""

    async def scenario() -> tuple[bytes, int]:
        job = await <REPLACE:Name>Frontend(make_context("<REPLACE:name>")).resolve({})
        async with kit_frontend_client(tmp_path, FILES) as client:
            output = await job.solve(client)
            ref = await client.solve(output.definitions["linux/amd64"])
            stat = await client.stat_file(ref, "greeting.txt")
            return await client.read_ref_file(ref, "greeting.txt"), stat.mode & 0o777

    assert anyio.run(scenario) == (b"hello from a frontend\n", 0o644)


def test_parse_names_the_file_and_line() -> None:
    assert parse("a/b.txt: hi\n\nmore\n", "Buildfile") == ("a/b.txt", b"hi\n", 1)
    with pytest.raises(UserError, match="Buildfile is empty"):
        parse("\n", "Buildfile")
    with pytest.raises(UserError, match="Buildfile:1: expected <path>: <text>"):
        parse("no colon here", "Buildfile")


def test_mode_must_be_octal() -> None:
    driver = <REPLACE:Name>Frontend(make_context("<REPLACE:name>"))
    with pytest.raises(ConfigError, match="mode='rw' is not an octal file mode"):
        anyio.run(driver.resolve, {"mode": "rw"})
