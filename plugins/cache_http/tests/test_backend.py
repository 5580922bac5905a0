"""The http backend against a real HTTP server on loopback: the kit, then its own behaviour."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.errors import ConfigError, UserError
from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.plugins.cache_http.backend import HttpCacheBackend
from llbkit.sdk.testing import (
    CacheBackendKit,
    CacheFaultKit,
    HttpStore,
    MemoryClientIO,
    make_context,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpStore]:
    with HttpStore(tmp_path / "served") as running:
        yield running


class TestHttpCacheBackend(CacheBackendKit):
    backend_class = HttpCacheBackend

    @pytest.fixture(autouse=True)
    def _serve(self, tmp_path: Path) -> Iterator[None]:
        with HttpStore(tmp_path / "kit-served") as running:
            self.url = running.url
            yield

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {"url": f"{self.url}/cache"}


class TestHttpCacheBackendFaults(CacheFaultKit):
    """Through a proxy that breaks requests, to a store that wants a token; the URL carries a
    signed query that no message may show."""

    backend_class = HttpCacheBackend
    secrets = ("s3cret-token", "sig=abc")

    @pytest.fixture(autouse=True)
    def _serve(self, tmp_path: Path) -> Iterator[None]:
        with HttpStore(tmp_path / "served", token="s3cret-token") as running:
            self.upstream = running.url
            yield

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        return {"url": f"{url}/cache?sig=abc", "token": "s3cret-token", "timeout": "0.3s"}


def _open(attrs: Mapping[str, str], direction: str = "export") -> Any:
    backend = HttpCacheBackend(make_context("http"))
    return backend.resolve(dict(attrs), direction, MemoryClientIO(Path("/nonexistent")))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_layout_is_blobs_and_manifests_by_name(server: HttpStore) -> None:
    data = b"layer bytes" * 1000

    async def scenario() -> None:
        store = await _open({"url": f"{server.url}/app", "name": "main;fallback"})
        try:
            await store.write_blob(_digest(data), len(data), _chunks(data))
            await store.write_index(b'{"layers":[]}')
        finally:
            await store.aclose()

    anyio.run(scenario)
    served = server.root / "app"
    assert (served / "blobs" / _digest(data)).read_bytes() == data
    assert (served / "manifests/main").read_bytes() == b'{"layers":[]}'
    assert (served / "manifests/fallback").read_bytes() == b'{"layers":[]}'


def test_an_import_reads_the_first_name_there(server: HttpStore) -> None:
    (server.root / "app/manifests").mkdir(parents=True)
    (server.root / "app/manifests/second").write_bytes(b"{}")

    async def scenario() -> bytes | None:
        store = await _open({"url": f"{server.url}/app", "name": "first;second"}, "import")
        try:
            return await store.read_index()  # type: ignore[no-any-return]
        finally:
            await store.aclose()

    assert anyio.run(scenario) == b"{}"


def test_a_blob_that_is_not_its_digest_is_never_sent(server: HttpStore) -> None:
    async def scenario() -> None:
        store = await _open({"url": server.url})
        try:
            await store.write_blob(_digest(b"expected"), 8, _chunks(b"tampered"))
        finally:
            await store.aclose()

    with pytest.raises(ValueError, match="arrived as sha256:"):
        anyio.run(scenario)
    assert not [r for r in server.requests if r[0] == "PUT"]


def test_a_flaky_server_is_transient_and_a_refusal_is_not(tmp_path: Path) -> None:
    async def head(store: Any) -> bool:
        try:
            return await store.has_blob(_digest(b"x"))  # type: ignore[no-any-return]
        finally:
            await store.aclose()

    with (
        HttpStore(tmp_path / "flaky", fail_every=1) as flaky,
        pytest.raises(TransientCacheError, match="HTTP 503"),
    ):
        anyio.run(lambda: _with(_open({"url": flaky.url}), head))
    with HttpStore(tmp_path / "locked", token="s3cret") as locked:
        with pytest.raises(UserError, match="access denied") as err:
            anyio.run(lambda: _with(_open({"url": locked.url}), head))
        assert not isinstance(err.value, TransientCacheError)
        assert (
            anyio.run(lambda: _with(_open({"url": locked.url, "token": "s3cret"}), head)) is False
        )


async def _with(opening: Any, use: Any) -> Any:
    return await use(await opening)


def test_credentials_never_appear_in_messages(tmp_path: Path) -> None:
    with HttpStore(tmp_path / "locked", token="s3cret") as locked:
        url = locked.url.replace("http://", "http://user:pa55@") + "/c?sig=abc"

        async def scenario() -> None:
            store = await _open({"url": url}, "import")
            try:
                await store.read_index()
            finally:
                await store.aclose()

        with pytest.raises(UserError) as err:
            anyio.run(scenario)
    assert "pa55" not in str(err.value) and "sig=abc" not in str(err.value)
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({}, "url= must be an http"),
        ({"url": "ftp://x"}, "url= must be an http"),
        ({"url": "http://x", "name": "../up"}, "name='../up'"),
        ({"url": "http://x", "timeout": "soon"}, "timeout='soon'"),
        ({"url": "http://x", "timeout": "0s"}, "timeout='0s' is not a duration"),
    ],
)
def test_bad_attributes_are_refused_by_name(attrs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        anyio.run(lambda: _open(attrs))
