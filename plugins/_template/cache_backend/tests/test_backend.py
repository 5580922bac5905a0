"""The cache-backend conformance kit, run against this plugin, then its own behaviour."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import ConfigError
from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.backend import <REPLACE:Name>CacheBackend
from llbkit.sdk.testing import CacheBackendKit, MemoryClientIO, make_context


class Test<REPLACE:Name>CacheBackend(CacheBackendKit):
    backend_class = <REPLACE:Name>CacheBackend

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        # The kit opens the same attributes for export and import: give both keys.
        return {"dest": str(tmp_path / "cache"), "src": str(tmp_path / "cache")}


def _backend() -> <REPLACE:Name>CacheBackend:
    return <REPLACE:Name>CacheBackend(make_context("<REPLACE:name>"))


def _client(tmp_path: Path) -> MemoryClientIO:
    return MemoryClientIO(tree_root=tmp_path / "client")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_each_direction_needs_its_own_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dest= is required to export"):
        anyio.run(_backend().resolve, {"src": str(tmp_path)}, "export", _client(tmp_path))
    with pytest.raises(ConfigError, match="src= is required to import"):
        anyio.run(_backend().resolve, {"dest": str(tmp_path)}, "import", _client(tmp_path))


def test_a_blob_that_does_not_match_its_digest_is_not_stored(tmp_path: Path) -> None:
    digest = "sha256:" + hashlib.sha256(b"expected").hexdigest()

    async def scenario() -> None:
        store = await _backend().resolve({"dest": str(tmp_path)}, "export", _client(tmp_path))
        await store.write_blob(digest, 8, _chunks(b"tampered"))

    with pytest.raises(ValueError, match="arrived as sha256:"):
        anyio.run(scenario)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_an_import_cannot_write_and_digests_cannot_escape(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await _backend().resolve({"src": str(tmp_path)}, "import", _client(tmp_path))
        assert await store.read_index() is None
        with pytest.raises(ValueError, match="not a sha256 digest"):
            await store.has_blob("sha256:../../etc/passwd")
        with pytest.raises(PermissionError, match="import only"):
            await store.write_index(b"{}")

    anyio.run(scenario)
