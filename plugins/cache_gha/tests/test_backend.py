"""The gha backend against a fake Actions cache service on loopback: the kit, then its own
behaviour (BuildKit's key names, the mutable index, scopes from the token)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.core.plugins.cacheconfig import merge_configs
from llbkit.plugins.cache_gha import backend as gha_backend
from llbkit.plugins.cache_gha.backend import VERSION, GhaCacheBackend, blob_key, index_key
from llbkit.sdk.testing import (
    CacheBackendKit,
    CacheFaultKit,
    Fault,
    FaultProxy,
    GhaCacheService,
    MemoryClientIO,
    make_context,
    make_gha_token,
)
from llbkit.sdk.testing.faults import requests_to

MAIN = "refs/heads/main"
# BuildKit's index key for scope=buildkit written from main: sha256("refs/heads/main")[:8]
MAIN_INDEX = "index-buildkit-1-" + hashlib.sha256(MAIN.encode()).hexdigest()[:8]


@pytest.fixture
def service() -> Iterator[GhaCacheService]:
    with GhaCacheService() as running:
        yield running


class TestGhaCacheBackend(CacheBackendKit):
    backend_class = GhaCacheBackend

    @pytest.fixture(autouse=True)
    def _serve(self) -> Iterator[None]:
        with GhaCacheService() as running:
            self.url = running.url
            yield

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {"url": self.url, "token": make_gha_token()}


class TestGhaCacheBackendFaults(CacheFaultKit):
    """Through a proxy that breaks requests: the API calls and the archive URLs the service
    hands out (on the proxy's host) alike. A blob goes in chunks (``PATCH``) here."""

    backend_class = GhaCacheBackend
    uploads = ("PATCH", "/_apis/artifactcache/caches/")

    @pytest.fixture(autouse=True)
    def _serve(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        monkeypatch.setattr(gha_backend, "CHUNK", 128 << 10)  # the kit's blobs in parts
        self.token = make_gha_token()
        self.secrets = (self.token, "sig=test")
        with GhaCacheService(behind_proxy=True) as running:
            self.upstream = running.url
            yield

    def proxy(self) -> FaultProxy:
        return FaultProxy(self.upstream)

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        return {"url": f"{url}/", "token": self.token, "timeout": str(self.timeout)}


def _open(attrs: Mapping[str, str], direction: str = "export") -> Any:
    backend = GhaCacheBackend(make_context("gha"))
    return backend.resolve(dict(attrs), direction, MemoryClientIO(Path("/nonexistent")))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _using(attrs: Mapping[str, str], direction: str, use: Any) -> Any:
    store = await _open(attrs, direction)
    try:
        return await use(store)
    finally:
        await store.aclose()


def _run(attrs: Mapping[str, str], direction: str, use: Any) -> Any:
    return anyio.run(lambda: _using(attrs, direction, use))


def test_version_and_key_names_are_buildkits() -> None:
    assert VERSION == "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
    assert blob_key("sha256:" + "a" * 64) == "buildkit-blob-1-sha256:" + "a" * 64
    assert index_key("buildkit", MAIN) == MAIN_INDEX


def test_keys_on_the_service_are_buildkits(service: GhaCacheService) -> None:
    data = b"layer" * 1000

    async def export(store: Any) -> None:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_index(b'{"layers":[],"records":[]}')

    # A URL without the trailing slash works as well (BuildKit master adds it).
    _run({"url": service.url.rstrip("/"), "token": make_gha_token()}, "export", export)
    assert service.keys(MAIN) == [f"buildkit-blob-1-{_digest(data)}", f"{MAIN_INDEX}#1"]
    assert service.content(f"buildkit-blob-1-{_digest(data)}") == data
    assert all("/_apis/artifactcache/" in path for _, path, _ in service.requests)


def test_the_index_is_saved_mutably_and_the_newest_read(service: GhaCacheService) -> None:
    attrs = {"url": service.url, "token": make_gha_token()}
    for n in (1, 2, 3):
        config = json.dumps({"layers": [], "records": [], "n": n}).encode()
        _run(attrs, "export", lambda store, c=config: store.write_index(c))
    assert service.keys() == [f"{MAIN_INDEX}#1", f"{MAIN_INDEX}#2", f"{MAIN_INDEX}#3"]
    index = _run(attrs, "import", lambda store: store.read_index())
    assert json.loads(index)["n"] == 3


def test_an_index_number_taken_meanwhile_is_skipped(service: GhaCacheService) -> None:
    attrs = {"url": service.url, "token": make_gha_token()}
    _run(attrs, "export", lambda store: store.write_index(b'{"n":1}'))

    async def racing(store: Any) -> None:
        # Another runner reserves #2 (not committed yet) between our lookup and reserve.
        import httpx

        headers = {
            "Authorization": f"Bearer {attrs['token']}",
            "Accept": "application/json;api-version=6.0-preview.1",
        }
        async with httpx.AsyncClient(headers=headers) as other:
            taken = await other.post(
                service.url + "_apis/artifactcache/caches",
                json={"key": f"{MAIN_INDEX}#2", "version": VERSION},
            )
            assert taken.status_code == 201
        await store.write_index(b'{"n":3}')

    _run(attrs, "export", racing)
    assert service.keys() == [f"{MAIN_INDEX}#1", f"{MAIN_INDEX}#3"]
    assert _run(attrs, "import", lambda store: store.read_index()) == b'{"n":3}'


def test_a_blob_already_there_is_a_409_and_done(service: GhaCacheService) -> None:
    data = b"shared layer"
    attrs = {"url": service.url, "token": make_gha_token()}

    async def twice(store: Any) -> bool:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_blob(_digest(data), len(data), _chunks(data))
        return await store.has_blob(_digest(data))  # type: ignore[no-any-return]

    assert _run(attrs, "export", twice) is True
    codes = [code for method, path, code in service.requests if method == "POST"]
    assert codes == [201, 204, 409], service.requests  # reserve, commit, then conflict
    assert not [1 for method, _, _ in service.requests if method == "PATCH"][1:]


def test_a_blob_that_is_not_its_digest_is_never_sent(service: GhaCacheService) -> None:
    attrs = {"url": service.url, "token": make_gha_token()}
    with pytest.raises(ValueError, match="arrived as sha256:"):
        _run(
            attrs,
            "export",
            lambda store: store.write_blob(_digest(b"expected"), 8, _chunks(b"tampered")),
        )
    assert not [r for r in service.requests if r[0] in ("POST", "PATCH")]


def test_large_blobs_go_in_32_mib_chunks(service: GhaCacheService) -> None:
    data = bytes(range(256)) * ((70 << 20) // 256)  # 70 MiB: three chunks
    attrs = {"url": service.url, "token": make_gha_token()}

    async def round_trip(store: Any) -> bytes:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

    assert _run(attrs, "export", round_trip) == data
    assert len([1 for method, _, _ in service.requests if method == "PATCH"]) == 3


def test_import_merges_every_readable_scope(service: GhaCacheService) -> None:
    def config(blob: str) -> bytes:
        return json.dumps(
            {
                "layers": [{"blob": blob, "parent": -1}],
                "records": [{"digest": "sha256:" + blob[-1] * 64, "layers": [{"layer": 0}]}],
            }
        ).encode()

    base = "sha256:" + "b" * 64
    feature = "sha256:" + "f" * 64
    on_main = {"url": service.url, "token": make_gha_token([(MAIN, 3)])}
    _run(on_main, "export", lambda store: store.write_index(config(base)))
    # A pull request's job: reads its own scope and main's, writes its own (the last).
    pr = {"url": service.url, "token": make_gha_token([(MAIN, 1), ("refs/pull/1/merge", 3)])}
    _run(pr, "export", lambda store: store.write_index(config(feature)))
    merged = json.loads(_run(pr, "import", lambda store: store.read_index()))
    assert [layer["blob"] for layer in merged["layers"]] == [base, feature]
    assert [r["layers"][0]["layer"] for r in merged["records"]] == [0, 1]
    # main's job never sees the pull request's index
    assert _run(on_main, "import", lambda store: store.read_index()) == config(base)


def test_merge_shifts_parents_chains_and_links() -> None:
    one = b'{"layers":[{"blob":"a","parent":-1}],"records":[{"digest":"r1"}]}'
    two = json.dumps(
        {
            "layers": [{"blob": "b", "parent": -1}, {"blob": "c"}],  # parent omitted: 0
            "records": [
                {"digest": "r2", "chains": [{"layers": [0, 1]}]},
                {"digest": "r3", "layers": [{"layer": 1}], "inputs": [[{"link": 0}]]},
            ],
        }
    ).encode()
    merged = json.loads(merge_configs([one, two]))
    assert [layer["parent"] for layer in merged["layers"]] == [-1, -1, 1]
    assert merged["records"][1]["chains"] == [{"layers": [1, 2]}]
    assert merged["records"][2]["layers"] == [{"layer": 2}]
    assert merged["records"][2]["inputs"] == [[{"link": 1}]]


def test_a_read_only_token_cannot_export(service: GhaCacheService) -> None:
    attrs = {"url": service.url, "token": make_gha_token([(MAIN, 1)])}
    with pytest.raises(
        ConfigError, match=r"may write to no cache scope \(granted: refs/heads/main"
    ):
        anyio.run(lambda: _open(attrs, "export"))
    assert _run(attrs, "import", lambda store: store.read_index()) is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_gha_token(expires_in=-10), "token= expired at 20"),
        (make_gha_token(valid_from=600), "token= is not valid before 20"),
        ("not-a-jwt", "token= is not a JWT"),
        ("a.!!!.c", "no readable JWT payload"),
    ],
)
def test_a_bad_token_is_refused_in_one_line(token: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        anyio.run(lambda: _open({"url": "http://127.0.0.1:9/", "token": token}, "import"))
    assert "\n" not in str(err.value)
    assert token not in str(err.value)


def test_the_token_never_appears_in_names_or_messages(service: GhaCacheService) -> None:
    token = make_gha_token()
    expired = make_gha_token(expires_in=-1)
    store = anyio.run(lambda: _open({"url": service.url, "token": token}, "import"))
    assert token not in store.name and "scope=buildkit" in store.name
    anyio.run(store.aclose)
    with pytest.raises(ConfigError) as refused:
        anyio.run(lambda: _open({"url": service.url, "token": expired}))
    assert expired not in str(refused.value)

    # The service refusing the token (it expired during the build): a user error, no token.
    async def denied(store: Any) -> None:
        store._http.headers["Authorization"] = f"Bearer {expired}"
        await store.has_blob(_digest(b"x"))

    with pytest.raises(UserError, match="access denied") as err:
        _run({"url": service.url, "token": token}, "import", denied)
    assert token not in str(err.value) and expired not in str(err.value)
    assert not isinstance(err.value, TransientCacheError)


def test_429_is_transient() -> None:
    with GhaCacheService(throttle_every=1) as throttled:
        attrs = {"url": throttled.url, "token": make_gha_token()}
        with pytest.raises(TransientCacheError, match="HTTP 429"):
            _run(attrs, "import", lambda store: store.has_blob(_digest(b"x")))


def test_uploads_once_reserved_outlast_throttling() -> None:
    from llbkit.core.control.cache_calls import retried

    data = b"x" * 1000
    with GhaCacheService(throttle_every=2) as throttled:
        attrs = {"url": throttled.url, "token": make_gha_token()}

        async def write(store: Any) -> None:
            # request 1 (reserve) passes, 2 (patch) is throttled: core waits, and the write
            # tried again takes up its reservation (3: patch) where it stopped, 4 (commit) is
            # throttled and made again at once, 5 passes
            await retried(lambda: store.write_blob(_digest(data), len(data), _chunks(data)))

        _run(attrs, "export", write)
        assert throttled.content(f"buildkit-blob-1-{_digest(data)}") == data
        assert [(m, code) for m, _, code in throttled.requests] == [
            ("POST", 201),
            ("PATCH", 429),
            ("PATCH", 204),
            ("POST", 429),
            ("POST", 204),
        ]


def test_missing_url_or_token_names_the_key_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACTIONS_CACHE_URL", raising=False)
    monkeypatch.delenv("ACTIONS_RUNTIME_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"url= is required \(or set \$ACTIONS_CACHE_URL\)"):
        anyio.run(lambda: _open({"token": make_gha_token()}))
    with pytest.raises(ConfigError, match=r"token= is required \(or set \$ACTIONS_RUNTIME_TOKEN"):
        anyio.run(lambda: _open({"url": "http://127.0.0.1:9/"}))


def test_url_and_token_come_from_the_environment(
    service: GhaCacheService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIONS_CACHE_URL", service.url)
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", make_gha_token())
    assert _run({"scope": "app"}, "import", lambda store: store.read_index()) is None
    assert any("index-app-1-" in path for _, path, _ in service.requests)


@pytest.mark.parametrize(
    ("attrs", "error", "message"),
    [
        ({"ref": "x"}, UnknownOptionError, "unknown option 'ref'; valid options: scope, timeout"),
        ({"url": "ftp://x/"}, ConfigError, "url= must be an http"),
        ({"timeout": "soon"}, ConfigError, "timeout=: 'soon' is not a duration"),
        ({"timeout": "0"}, ConfigError, "timeout='0' is not a positive duration"),
        ({"scope": "a,b"}, ConfigError, "scope='a,b' may not hold a comma"),
    ],
)
def test_bad_attributes_are_refused_by_name(
    attrs: dict[str, str], error: type[Exception], message: str
) -> None:
    full = {"url": "http://127.0.0.1:9/", "token": make_gha_token(), **attrs}
    with pytest.raises(error, match=message):
        anyio.run(lambda: _open(full))


def test_a_commit_that_keeps_failing_is_never_reported_stored() -> None:
    """Once reserved, a key is this export's: a commit failing past patience must fail the
    blob, not let a second reservation find the key taken and call it present."""
    import hashlib as _hashlib

    from llbkit.core.control.cache_calls import retried
    from llbkit.core.errors import UserError as _UserError
    from llbkit.plugins.cache_gha.backend import GhaCacheBackend as _Backend
    from llbkit.sdk.testing import GhaCacheService, make_gha_token
    from llbkit.sdk.testing import MemoryClientIO as _Client
    from llbkit.sdk.testing import make_context as _context

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    async def scenario(url: str) -> bool:
        store = await _Backend(_context("gha")).resolve(
            {"url": url, "token": make_gha_token()}, "export", _Client(Path("/nonexistent"))
        )
        real = store._send
        failures = 0

        async def flaky(method: str, target: str, client: Any = None, **kw: Any) -> Any:
            nonlocal failures
            if method == "POST" and "/caches/" in target and failures < 50:
                failures += 1
                raise TransientCacheError(f"{method} {target}: HTTP 503")
            return await real(method, target, client, **kw)

        store._send = flaky
        data = b"hello blob"
        digest = "sha256:" + _hashlib.sha256(data).hexdigest()
        try:
            with pytest.raises(_UserError):
                await retried(lambda: store.write_blob(digest, len(data), one(data)))
            return bool(await store.has_blob(digest))
        finally:
            await store.aclose()

    with GhaCacheService() as service:
        assert anyio.run(scenario, service.url) is False


def test_the_bytes_go_through_a_proxy_in_front_of_the_service() -> None:
    """Behind a proxy, the archive URLs the service hands out are on the proxy's host, and end
    in the entry's key (a proxy tells blobs from an index)."""
    data = b"through the proxy"
    with GhaCacheService(behind_proxy=True) as service, FaultProxy(service.url) as proxy:
        attrs = {"url": f"{proxy.url}/", "token": make_gha_token()}

        async def round_trip(store: Any) -> bytes:
            await store.write_blob(_digest(data), len(data), _chunks(data))
            await store.write_index(b"{}")
            assert await store.read_index() == b"{}"
            return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

        assert _run(attrs, "export", round_trip) == data
    assert proxy.count("GET", f"/_artifacts/1/buildkit-blob-1-{_digest(data)}") == 1
    assert proxy.count("GET", f"/_artifacts/2/{MAIN_INDEX}#1") == 1
    assert proxy.count("GET") == len([r for r in service.requests if r[0] == "GET"])


def test_a_commit_whose_answer_was_lost_is_found_done() -> None:
    """The commit goes through but its answer never comes (a stall past timeout=): left to
    core, not made again here; tried again, the write takes up its reservation, and the
    commit refused as done already is looked up and found there."""
    data = b"committed in the dark"
    commits = requests_to("POST", "/_apis/artifactcache/caches/")
    with GhaCacheService(behind_proxy=True) as service, FaultProxy(service.url) as proxy:
        attrs = {"url": f"{proxy.url}/", "token": make_gha_token(), "timeout": "0.3"}

        async def twice(store: Any) -> bool:
            proxy.fault = Fault.stall(1.0, only=commits)
            with pytest.raises(TransientCacheError, match=r"no answer within 0\.3s \(timeout=\)"):
                await store.write_blob(_digest(data), len(data), _chunks(data))
            proxy.fault = Fault.none()
            await store.write_blob(_digest(data), len(data), _chunks(data))
            return await store.has_blob(_digest(data))  # type: ignore[no-any-return]

        assert _run(attrs, "export", twice) is True
        done = [(m, p.rsplit("/", 1)[-1], code) for m, p, code in service.requests if m != "GET"]
    assert done == [
        ("POST", "caches", 201),  # reserved once
        ("PATCH", "1", 204),
        ("POST", "1", 204),  # committed; the answer stalled
        ("POST", "1", 400),  # already committed
    ]
