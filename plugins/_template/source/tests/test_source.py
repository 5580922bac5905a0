"""The source conformance kit, run against this plugin, then its own behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import ConfigError, UserError
from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.source import <REPLACE:Name>Job, <REPLACE:Name>Source
from llbkit.sdk.testing import MemoryClientIO, RecordingProgress, SourceKit, make_context

SCHEME = "<REPLACE:name>"


@pytest.fixture(autouse=True)
def _variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLBKIT_GREETING", "hello")


class Test<REPLACE:Name>Source(SourceKit):
    source_class = <REPLACE:Name>Source
    scheme = SCHEME
    attr_namespace = SCHEME
    valid: ClassVar[Sequence[tuple[str, Mapping[str, str]]]] = (
        (f"{SCHEME}://LLBKIT_GREETING", {f"{SCHEME}.filename": "greeting"}),
        (f"{SCHEME}://LLBKIT_GREETING", {f"{SCHEME}.mode": "600", "other.key": "ignored"}),
    )
    invalid: ClassVar[Sequence[str]] = (f"{SCHEME}://", f"{SCHEME}://1ABC", "other://X", "X")


def _resolve(identifier: str, **attrs: str) -> <REPLACE:Name>Job:
    driver = <REPLACE:Name>Source(make_context(SCHEME))
    attrs = {f"{SCHEME}.{key}": value for key, value in attrs.items()}
    return anyio.run(driver.resolve, identifier, attrs, None)


def test_fetch_writes_the_value_with_its_mode(tmp_path: Path) -> None:
    job = _resolve(f"{SCHEME}://LLBKIT_GREETING", mode="600")
    anyio.run(job.fetch, MemoryClientIO(tmp_path), tmp_path, RecordingProgress())
    assert (tmp_path / "LLBKIT_GREETING").read_bytes() == b"hello"
    assert (tmp_path / "LLBKIT_GREETING").stat().st_mode & 0o777 == 0o600


def test_the_key_follows_the_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = MemoryClientIO(tmp_path)

    def key() -> str:
        return anyio.run(_resolve(f"{SCHEME}://LLBKIT_GREETING").cache_key, client)

    first = key()
    assert key() == first
    monkeypatch.setenv("LLBKIT_GREETING", "bonjour")
    assert key() != first


def test_missing_variable_and_bad_attributes_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"no environment variable LLBKIT_NOT_SET$"):
        _resolve(f"{SCHEME}://LLBKIT_NOT_SET")
    with pytest.raises(ConfigError, match=r"filename='\.\./x' is not a file name"):
        _resolve(f"{SCHEME}://LLBKIT_GREETING", filename="../x")
    with pytest.raises(ConfigError, match="mode is not an octal file mode"):
        _resolve(f"{SCHEME}://LLBKIT_GREETING", mode="rw")
