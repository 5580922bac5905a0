"""The gha backend's v2 protocol (Twirp, the bytes in Azure Blob Storage behind signed URLs)
against the fake service whose data path is a real Azurite: the kit, then what v2 must get
right as BuildKit's client does (choosing the protocol, taken keys, the mutable index, expired
download URLs, no token or signature in any message)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from llbkit.core.errors import ConfigError, UserError
from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.plugins.cache_gha import backend as gha_backend
from llbkit.plugins.cache_gha.backend import (
    CHUNK,
    VERSION,
    Endpoint,
    GhaCacheBackend,
    blob_key,
    resolve_endpoint,
)
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
from llbkit.sdk.testing.azurite import Azurite, azurite  # noqa: F401 - a fixture, used by name
from llbkit.sdk.testing.faults import requests_to
from llbkit.sdk.testing.gha_cache import SAS_VERSION, TWIRP, blob_sas

MAIN = "refs/heads/main"
MAIN_INDEX = "index-buildkit-1-" + hashlib.sha256(MAIN.encode()).hexdigest()[:8]
RESULTS = "https://results-receiver.actions.githubusercontent.com/"
CACHE = "https://artifactcache.actions.githubusercontent.com/abc/"


@pytest.fixture
def service(azurite: Azurite) -> Iterator[GhaCacheService]:  # noqa: F811 - the fixture
    with GhaCacheService(v2=azurite) as running:
        yield running


class TestGhaCacheBackendV2(CacheBackendKit):
    backend_class = GhaCacheBackend

    @pytest.fixture(autouse=True)
    def _serve(self, azurite: Azurite) -> Iterator[None]:  # noqa: F811 - the fixture
        with GhaCacheService(v2=azurite) as running:
            self.url = running.url
            yield

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {"url_v2": self.url, "token": make_gha_token()}


class TestGhaCacheBackendV2Faults(CacheFaultKit):
    """Through one proxy that breaks requests: in front of the Twirp service, and of Azurite
    for the signed URLs the service hands out on the proxy's host (Azurite still checks every
    SAS). A blob goes in staged blocks and a block list here."""

    backend_class = GhaCacheBackend

    @pytest.fixture(autouse=True)
    def _serve(
        self,
        azurite: Azurite,  # noqa: F811 - the fixture
        monkeypatch: pytest.MonkeyPatch,
    ) -> Iterator[None]:
        monkeypatch.setattr(gha_backend, "CHUNK", 128 << 10)  # the kit's blobs in blocks
        self.token = make_gha_token()
        self.secrets = (self.token, "se=", "sp=")  # no SAS query, its signature least of all
        with GhaCacheService(v2=azurite, behind_proxy=True) as running:
            self.service = running
            self.upstream = running.url
            yield

    def proxy(self) -> FaultProxy:
        return FaultProxy(self.upstream, routes=self.service.proxy_routes)

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        return {"url_v2": url, "token": self.token, "timeout": str(self.timeout)}


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


def _v2(service: GhaCacheService, **more: str) -> dict[str, str]:
    return {"url_v2": service.url, "token": make_gha_token(), **more}


def _calls(service: GhaCacheService, method: str) -> list[int]:
    """The HTTP status of every ``method`` call the service answered, in order."""
    return [code for _, path, code in service.requests if path == TWIRP + method]


def _twirp(service: GhaCacheService, method: str, body: Mapping[str, Any]) -> httpx.Response:
    """A call from another runner, straight to the service."""
    headers = {"Authorization": f"Bearer {make_gha_token()}"}
    return httpx.post(service.url + TWIRP.lstrip("/") + method, json=body, headers=headers)


# -- which protocol, which URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "environ", "expected"),
    [
        # getConfig: url_v2 wins unless version=1; no version: the results host means v2
        ({"url": CACHE}, {}, Endpoint(CACHE, 1, "url")),
        ({"url": RESULTS}, {}, Endpoint(RESULTS, 2, "url")),
        ({"url": CACHE, "version": "2"}, {}, Endpoint(CACHE, 2, "url")),
        ({"url_v2": RESULTS}, {}, Endpoint(RESULTS, 2, "url_v2")),
        ({"url": CACHE, "url_v2": RESULTS}, {}, Endpoint(RESULTS, 2, "url_v2")),
        ({"url": CACHE, "url_v2": RESULTS, "version": "1"}, {}, Endpoint(CACHE, 1, "url")),
        ({"url": RESULTS, "version": "1"}, {}, Endpoint(RESULTS, 1, "url")),
        ({"url": CACHE, "version": "0"}, {}, Endpoint(CACHE, 1, "url")),
        ({"url": CACHE, "version": "+2"}, {}, Endpoint(CACHE, 2, "url")),
        ({"url": CACHE, "version": "3"}, {}, Endpoint(CACHE, 2, "url")),  # Version > 1
        ({"url": CACHE, "version": "-1"}, {}, Endpoint(CACHE, 1, "url")),
        # buildctl: url from $ACTIONS_CACHE_URL, else $ACTIONS_RESULTS_URL
        ({}, {"ACTIONS_CACHE_URL": CACHE}, Endpoint(CACHE, 1, "url")),
        ({}, {"ACTIONS_RESULTS_URL": RESULTS}, Endpoint(RESULTS, 2, "url")),
        (
            {},
            {"ACTIONS_CACHE_URL": CACHE, "ACTIONS_RESULTS_URL": RESULTS},
            Endpoint(CACHE, 1, "url"),
        ),
        # $ACTIONS_CACHE_SERVICE_V2 (a Go bool) makes $ACTIONS_RESULTS_URL the url_v2
        *(
            (
                {},
                {
                    "ACTIONS_CACHE_SERVICE_V2": flag,
                    "ACTIONS_CACHE_URL": CACHE,
                    "ACTIONS_RESULTS_URL": RESULTS,
                },
                Endpoint(RESULTS, 2, "url_v2") if v2 else Endpoint(CACHE, 1, "url"),
            )
            for flag, v2 in [
                *[("true", True), ("1", True), ("T", True), ("TRUE", True)],
                *[("false", False), ("0", False), ("yes", False), ("", False)],
            ]
        ),
        # ... only when no version= is given; version=2 does it too, version=1 never
        (
            {"version": "1"},
            {"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_CACHE_URL": CACHE},
            Endpoint(CACHE, 1, "url"),
        ),
        (
            {"url": CACHE, "version": "2"},
            {"ACTIONS_RESULTS_URL": RESULTS},
            Endpoint(RESULTS, 2, "url_v2"),
        ),
        # "02" is 2 to the daemon but not the "2" buildctl compares with
        (
            {"url": CACHE, "version": "02"},
            {"ACTIONS_RESULTS_URL": RESULTS},
            Endpoint(CACHE, 2, "url"),
        ),
        # $ACTIONS_CACHE_SERVICE_V2 without $ACTIONS_RESULTS_URL: the URL decides, as in Go
        (
            {},
            {"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_CACHE_URL": CACHE},
            Endpoint(CACHE, 1, "url"),
        ),
        # what is given beats the environment
        (
            {"url_v2": "http://127.0.0.1:1/"},
            {"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_RESULTS_URL": RESULTS},
            Endpoint("http://127.0.0.1:1/", 2, "url_v2"),
        ),
        (
            {"url": "http://127.0.0.1:1/"},
            {"ACTIONS_CACHE_URL": CACHE},
            Endpoint("http://127.0.0.1:1/", 1, "url"),
        ),
    ],
)
def test_protocol_and_url_are_chosen_as_buildkit_does(
    attrs: dict[str, str], environ: dict[str, str], expected: Endpoint
) -> None:
    assert resolve_endpoint(attrs, environ, "gha") == expected


@pytest.mark.parametrize("version", ["two", "1.0", "", " 2", "1_0", "0x2", "9" * 20])
def test_a_bad_version_is_refused_by_key(version: str) -> None:
    attrs = {"url": CACHE, "token": make_gha_token(), "version": version}
    with pytest.raises(ConfigError, match=r"version=.* is not an integer") as err:
        anyio.run(lambda: _open(attrs))
    assert "\n" not in str(err.value)


def test_url_v2_alone_with_version_1_names_what_is_missing() -> None:
    attrs = {"url_v2": RESULTS, "version": "1", "token": make_gha_token()}
    with pytest.raises(ConfigError, match=r"url= is required \(or set \$ACTIONS_CACHE_URL\)"):
        anyio.run(lambda: _open(attrs))


def test_a_bad_url_v2_is_refused_by_its_key() -> None:
    with pytest.raises(ConfigError, match="url_v2= must be an http"):
        anyio.run(lambda: _open({"url_v2": "ftp://x/", "token": make_gha_token()}))


def test_the_runner_environment_selects_v2(
    service: GhaCacheService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a runner sets (and crazy-max/ghaction-github-runtime exposes) is enough."""
    monkeypatch.setenv("ACTIONS_CACHE_URL", "http://127.0.0.1:9/")  # v1's, not used
    monkeypatch.setenv("ACTIONS_RESULTS_URL", service.url)
    monkeypatch.setenv("ACTIONS_CACHE_SERVICE_V2", "True")
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", make_gha_token())

    async def look(store: Any) -> tuple[str, bytes | None]:
        return store.name, await store.read_index()

    name, index = _run({"scope": "app"}, "import", look)
    assert index is None and name.startswith("gha v2 http://127.0.0.1:")
    assert _calls(service, "GetCacheEntryDownloadURL") == [200]


# -- keys, the mutable index, taken keys ------------------------------------------------------


def test_keys_on_the_service_are_buildkits(service: GhaCacheService) -> None:
    data = b"layer" * 1000

    async def export(store: Any) -> None:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_index(b'{"layers":[],"records":[]}')

    # A URL with the trailing slash or without, as url= with version=2
    attrs = {"url": service.url.rstrip("/"), "version": "2", "token": make_gha_token()}
    _run(attrs, "export", export)
    assert service.keys(MAIN) == [f"buildkit-blob-1-{_digest(data)}", f"{MAIN_INDEX}#1"]
    assert service.content(f"buildkit-blob-1-{_digest(data)}") == data  # read from Azurite
    assert {method for method, _, _ in service.requests} == {"POST"}
    assert all(path.startswith(TWIRP) for _, path, _ in service.requests)
    assert all(entry.version == VERSION for entry in service.entries.values())


def test_the_index_is_saved_mutably_and_the_newest_read(service: GhaCacheService) -> None:
    attrs = _v2(service)
    for n in (1, 2, 3):
        config = json.dumps({"layers": [], "records": [], "n": n}).encode()
        _run(attrs, "export", lambda store, c=config: store.write_index(c))
    assert service.keys() == [f"{MAIN_INDEX}#1", f"{MAIN_INDEX}#2", f"{MAIN_INDEX}#3"]
    index = _run(attrs, "import", lambda store: store.read_index())
    assert json.loads(index)["n"] == 3


def test_an_index_number_taken_meanwhile_is_skipped(service: GhaCacheService) -> None:
    attrs = _v2(service)
    _run(attrs, "export", lambda store: store.write_index(b'{"n":1}'))

    async def racing(store: Any) -> None:
        # Another runner reserves #2 (and never finishes it) between our lookup and reserve.
        taken = _twirp(service, "CreateCacheEntry", {"key": f"{MAIN_INDEX}#2", "version": VERSION})
        assert taken.status_code == 200 and taken.json()["ok"] is True
        await store.write_index(b'{"n":3}')

    _run(attrs, "export", racing)
    assert service.keys() == [f"{MAIN_INDEX}#1", f"{MAIN_INDEX}#3"]
    assert _calls(service, "CreateCacheEntry") == [200, 200, 409, 200]
    assert _run(attrs, "import", lambda store: store.read_index()) == b'{"n":3}'


def test_an_index_key_that_is_not_numbered_is_refused(service: GhaCacheService) -> None:
    key = f"{MAIN_INDEX}#latest"
    assert _twirp(service, "CreateCacheEntry", {"key": key, "version": VERSION}).json()["ok"]
    upload = service.signed_url(service.entries[1].blob, "cw")
    httpx.put(upload, content=b"{}", headers={"x-ms-blob-type": "BlockBlob"}).raise_for_status()
    body = {"key": key, "size_bytes": 2, "version": VERSION}
    assert _twirp(service, "FinalizeCacheEntryUpload", body).json()["ok"]
    with pytest.raises(UserError, match=r"invalid index key '.*#latest'"):
        _run(_v2(service), "export", lambda store: store.write_index(b"{}"))


def test_a_blob_already_there_is_taken_and_done(service: GhaCacheService) -> None:
    data = b"shared layer"

    async def twice(store: Any) -> bool:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_blob(_digest(data), len(data), _chunks(data))
        return await store.has_blob(_digest(data))  # type: ignore[no-any-return]

    assert _run(_v2(service), "export", twice) is True
    assert _calls(service, "CreateCacheEntry") == [200, 409]  # already_exists
    assert _calls(service, "FinalizeCacheEntryUpload") == [200]


def test_a_blob_reserved_but_never_finished_is_not_named(service: GhaCacheService) -> None:
    data = b"half a layer"
    key = blob_key(_digest(data))
    assert _twirp(service, "CreateCacheEntry", {"key": key, "version": VERSION}).json()["ok"]
    with pytest.raises(UserError, match="is reserved by an export that has not finished it"):
        _run(
            _v2(service),
            "export",
            lambda store: store.write_blob(_digest(data), len(data), _chunks(data)),
        )


def test_large_blobs_go_as_blocks_and_a_block_list(service: GhaCacheService) -> None:
    from azure.storage.blob import BlobClient

    data = bytes(range(256)) * ((70 << 20) // 256)  # 70 MiB: three blocks

    async def round_trip(store: Any) -> bytes:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

    assert _run(_v2(service), "export", round_trip) == data
    blob = BlobClient.from_blob_url(service.blob_url(blob_key(_digest(data))))
    committed, uncommitted = blob.get_block_list("all")
    assert [block.size for block in committed] == [CHUNK, CHUNK, len(data) - 2 * CHUNK]
    assert not uncommitted
    # the SDK shows the ids decoded: Azure wants them one length per blob
    assert len({len(block.id) for block in committed}) == 1


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
    on_main = {"url_v2": service.url, "token": make_gha_token([(MAIN, 3)])}
    _run(on_main, "export", lambda store: store.write_index(config(base)))
    pr = {
        "url_v2": service.url,
        "token": make_gha_token([(MAIN, 1), ("refs/pull/1/merge", 3)]),
    }
    _run(pr, "export", lambda store: store.write_index(config(feature)))
    merged = json.loads(_run(pr, "import", lambda store: store.read_index()))
    assert [layer["blob"] for layer in merged["layers"]] == [base, feature]
    assert [r["layers"][0]["layer"] for r in merged["records"]] == [0, 1]
    assert _run(on_main, "import", lambda store: store.read_index()) == config(base)


# -- signed URLs ------------------------------------------------------------------------------


def test_an_expired_download_url_is_asked_for_again(service: GhaCacheService) -> None:
    data = b"a layer read late"
    attrs = _v2(service)
    _run(attrs, "export", lambda store: store.write_blob(_digest(data), len(data), _chunks(data)))
    _run(attrs, "export", lambda store: store.write_index(b'{"n":1}'))
    expired = service.signed_url(service.entries[1].blob, "r", -60)
    assert httpx.get(expired).status_code == 403  # Azurite's own answer to an old SAS

    async def read(store: Any) -> tuple[bytes, bytes | None]:
        before = len(_calls(service, "GetCacheEntryDownloadURL"))
        service.expire_downloads = 1
        blob = b"".join([chunk async for chunk in store.read_blob(_digest(data))])
        assert len(_calls(service, "GetCacheEntryDownloadURL")) == before + 2  # once again
        service.expire_downloads = 1
        return blob, await store.read_index()

    assert _run(attrs, "import", read) == (data, b'{"n":1}')


def test_a_download_url_refused_twice_is_an_error_without_signature(
    service: GhaCacheService,
) -> None:
    data = b"a layer"
    token = make_gha_token()
    attrs = {"url_v2": service.url, "token": token}
    _run(attrs, "export", lambda store: store.write_blob(_digest(data), len(data), _chunks(data)))
    service.expire_downloads = 2

    async def read(store: Any) -> bytes:
        return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

    with pytest.raises(UserError, match=r"HTTP 403 .*AuthorizationFailure") as err:
        _run(attrs, "import", read)
    message = str(err.value)
    assert "\n" not in message and "sig=" not in message and "se=" not in message
    assert token not in message and service.container in message


def test_the_token_never_goes_to_a_signed_url(service: GhaCacheService) -> None:
    data = bytes(range(256)) * ((33 << 20) // 256)  # two blocks, then the list
    seen: list[httpx.Request] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return await super().handle_async_request(request)

    async def export(store: Any) -> bytes:
        await store._signed.aclose()
        store._signed = httpx.AsyncClient(transport=Recording())
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_blob(_digest(b"small"), 5, _chunks(b"small"))
        return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

    assert _run(_v2(service), "export", export) == data
    comps = [parse_qs(urlsplit(str(r.url)).query).get("comp", [""])[0] for r in seen]
    assert comps == ["block", "block", "blocklist", "", ""]
    assert [r.method for r in seen] == ["PUT"] * 4 + ["GET"]
    assert seen[3].headers["x-ms-blob-type"] == "BlockBlob"  # the small one: one Put Blob
    assert all("authorization" not in r.headers and r.headers["x-ms-version"] for r in seen)


def test_a_cut_connection_to_a_signed_url_names_no_signature(service: GhaCacheService) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    async def export(store: Any) -> bool:
        signed = store._signed
        store._signed = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
        with pytest.raises(TransientCacheError, match=r"cannot reach http://127\.0\.0\.1") as err:
            await store.write_blob(_digest(b"x"), 1, _chunks(b"x"))
        assert "sig=" not in str(err.value) and "sp=" not in str(err.value)
        await store._signed.aclose()
        store._signed = signed
        # Tried again, the write takes up its reservation: the key is not found "taken".
        await store.write_blob(_digest(b"x"), 1, _chunks(b"x"))
        return await store.has_blob(_digest(b"x"))  # type: ignore[no-any-return]

    assert _run(_v2(service), "export", export) is True
    assert _calls(service, "CreateCacheEntry") == [200]
    assert _calls(service, "FinalizeCacheEntryUpload") == [200]


def test_the_fakes_signatures_are_azures() -> None:
    """The fake signs SAS URLs itself; Azure's own SDK signs the same fields the same way."""
    from azure.storage.blob import BlobSasPermissions
    from azure.storage.blob._shared_access_signature import BlobSharedAccessSignature

    from llbkit.sdk.testing.azurite import ACCOUNT, KEY

    expiry = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    for permissions in ("r", "cw"):
        theirs = BlobSharedAccessSignature(ACCOUNT, account_key=KEY)
        theirs.x_ms_version = SAS_VERSION
        expected = theirs.generate_blob(
            "box",
            "entry-1",
            permission=BlobSasPermissions.from_string(permissions),
            expiry=expiry,
        )
        ours = blob_sas(ACCOUNT, KEY, "box", "entry-1", permissions=permissions, expiry=expiry)
        assert parse_qs(ours) == parse_qs(expected)


def test_the_fake_checks_signatures_sizes_and_permissions(service: GhaCacheService) -> None:
    """Faithful where a client could go wrong: a SAS is checked by Azurite, a read URL
    cannot write, and Finalize checks the size against the blob in Azurite."""
    key = "buildkit-blob-1-sha256:" + "c" * 64
    created = _twirp(service, "CreateCacheEntry", {"key": key, "version": VERSION}).json()
    upload = created["signed_upload_url"]
    sas = parse_qs(urlsplit(upload).query)
    assert sas["sp"] == ["cw"] and sas["sr"] == ["b"]
    tampered = upload.replace("sig=", "sig=AA")
    put = {"x-ms-blob-type": "BlockBlob"}
    assert httpx.put(tampered, content=b"12345", headers=put).status_code == 403
    read_only = service.signed_url(service.entries[1].blob, "r")
    assert httpx.put(read_only, content=b"12345", headers=put).status_code == 403
    body = {"key": key, "size_bytes": 5, "version": VERSION}
    nothing = _twirp(service, "FinalizeCacheEntryUpload", body)
    assert nothing.status_code == 400 and nothing.json()["code"] == "invalid_argument"
    assert httpx.put(upload, content=b"12345", headers=put).status_code == 201
    wrong = _twirp(service, "FinalizeCacheEntryUpload", {**body, "size_bytes": 6})
    assert wrong.status_code == 400 and "does not match the 5 bytes" in wrong.json()["msg"]
    done = _twirp(service, "FinalizeCacheEntryUpload", body)
    assert done.json() == {"ok": True, "entry_id": "1"}
    lookup = {"key": key, "restore_keys": [], "version": VERSION}
    found = _twirp(service, "GetCacheEntryDownloadURL", lookup).json()
    assert found["ok"] and found["matched_key"] == key
    assert httpx.get(found["signed_download_url"]).content == b"12345"
    other = _twirp(service, "GetCacheEntryDownloadURL", {**lookup, "version": "x"}).json()
    assert other == {"ok": False}
    # the key exactly, then restore keys as prefixes; the key itself is not a prefix
    prefix = {"key": key[:-1], "restore_keys": [], "version": VERSION}
    assert _twirp(service, "GetCacheEntryDownloadURL", prefix).json() == {"ok": False}
    restore = {**prefix, "restore_keys": [key[:-10]]}
    assert _twirp(service, "GetCacheEntryDownloadURL", restore).json()["matched_key"] == key
    anonymous = httpx.post(service.url + TWIRP.lstrip("/") + "CreateCacheEntry", json=body)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (409, "already_exists", "taken"),
        (429, "resource_exhausted", "throttled"),
        (503, "unavailable", "transient"),
        (500, "internal", "transient"),
        (409, "aborted", "transient"),
        (408, "deadline_exceeded", "transient"),
        (401, "unauthenticated", "denied"),
        (403, "permission_denied", "denied"),
        (400, "invalid_argument", "error"),
        (404, "bad_route", "error"),
    ],
)
def test_twirp_errors_map_as_buildkits_client_reads_them(
    status: int, code: str, outcome: str
) -> None:
    token = make_gha_token()

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {"key": "k#1", "version": VERSION}
        return httpx.Response(status, json={"code": code, "msg": "said so"})

    async def reserve(store: Any) -> bool:
        headers = store._http.headers
        await store._http.aclose()
        store._http = httpx.AsyncClient(transport=httpx.MockTransport(answer), headers=headers)

        async def read(start: int, length: int) -> bytes:
            return b""

        return await store._save("k#1", 0, read, "0:")  # type: ignore[no-any-return]

    attrs = {"url_v2": "http://127.0.0.1:9/", "token": token}
    if outcome == "taken":
        assert _run(attrs, "export", reserve) is False
        return
    with pytest.raises(UserError) as err:
        _run(attrs, "export", reserve)
    message = str(err.value)
    assert "CacheService/CreateCacheEntry" in message and token not in message
    assert isinstance(err.value, TransientCacheError) == (outcome in ("transient", "throttled"))
    if outcome == "throttled":
        assert isinstance(err.value, TransientCacheError) and err.value.throttled
    if outcome == "denied":
        assert "access denied" in message
    if outcome == "error":
        assert f"({code}: said so)" in message


def test_the_token_refused_by_the_service_is_a_user_error(service: GhaCacheService) -> None:
    token, expired = make_gha_token(), make_gha_token(expires_in=-1)

    async def denied(store: Any) -> None:
        store._http.headers["Authorization"] = f"Bearer {expired}"
        await store.has_blob(_digest(b"x"))

    with pytest.raises(UserError, match="access denied") as err:
        _run({"url_v2": service.url, "token": token}, "import", denied)
    assert token not in str(err.value) and expired not in str(err.value)
    assert not isinstance(err.value, TransientCacheError)


def test_429_is_throttled(azurite: Azurite) -> None:  # noqa: F811 - the fixture
    with GhaCacheService(v2=azurite, throttle_every=1) as throttled:
        with pytest.raises(TransientCacheError, match=r"HTTP 429.*resource_exhausted") as err:
            _run(_v2(throttled), "import", lambda store: store.has_blob(_digest(b"x")))
        assert err.value.throttled


def test_a_reserved_upload_outlasts_throttling(azurite: Azurite) -> None:  # noqa: F811
    data = b"x" * 1000
    with GhaCacheService(v2=azurite, throttle_every=2) as throttled:
        # call 1 (create) passes, 2 (finalize) is throttled and tried again here, 3 passes
        _run(
            _v2(throttled),
            "export",
            lambda store: store.write_blob(_digest(data), len(data), _chunks(data)),
        )
        assert throttled.content(blob_key(_digest(data))) == data
        assert _calls(throttled, "FinalizeCacheEntryUpload") == [429, 200]


def test_a_finalize_that_keeps_failing_is_never_reported_stored(
    service: GhaCacheService,
) -> None:
    from llbkit.core.control.cache_calls import retried

    data = b"hello blob"

    async def scenario(store: Any) -> bool:
        real = store._send

        async def flaky(method: str, target: str, client: Any = None, **kw: Any) -> Any:
            if target.endswith("/FinalizeCacheEntryUpload"):
                raise TransientCacheError(f"{method} {target}: HTTP 503")
            return await real(method, target, client, **kw)

        store._send = flaky
        with pytest.raises(UserError):
            await retried(lambda: store.write_blob(_digest(data), len(data), _chunks(data)))
        return bool(await store.has_blob(_digest(data)))

    assert _run(_v2(service), "export", scenario) is False


def test_signed_urls_go_through_a_proxy_in_front_of_the_service(azurite: Azurite) -> None:  # noqa: F811
    """Behind a proxy, the signed URLs are on the proxy's host, path-style: the proxy routes
    them to Azurite, which still checks every SAS; the blob's name ends in its key."""
    data = b"through the proxy"
    with GhaCacheService(v2=azurite, behind_proxy=True) as service:
        with FaultProxy(service.url, routes=service.proxy_routes) as proxy:
            attrs = {"url_v2": proxy.url, "token": make_gha_token()}

            async def round_trip(store: Any) -> bytes:
                await store.write_blob(_digest(data), len(data), _chunks(data))
                return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

            assert _run(attrs, "export", round_trip) == data
        blob = f"/{azurite.account}/{service.container}/entry-1-buildkit-blob-1-{_digest(data)}"
        assert proxy.count("PUT", blob, 201) == 1 and proxy.count("GET", blob, 200) == 1
        assert proxy.count("POST", TWIRP) == len(service.requests)


def test_a_finalize_whose_answer_was_lost_is_found_done(service: GhaCacheService) -> None:
    """Finalize goes through but its answer never comes: tried again, the write takes up its
    reservation (nothing uploaded again), and the finalize refused as done is found there."""
    data = b"finalized in the dark"
    service.behind_proxy = True
    finalize = requests_to("POST", "FinalizeCacheEntryUpload")
    with FaultProxy(service.url, routes=service.proxy_routes) as proxy:
        attrs = {"url_v2": proxy.url, "token": make_gha_token(), "timeout": "0.3"}

        async def twice(store: Any) -> bool:
            proxy.fault = Fault.stall(1.0, only=finalize)
            with pytest.raises(TransientCacheError, match=r"no answer within 0\.3s \(timeout=\)"):
                await store.write_blob(_digest(data), len(data), _chunks(data))
            proxy.fault = Fault.none()
            await store.write_blob(_digest(data), len(data), _chunks(data))
            return await store.has_blob(_digest(data))  # type: ignore[no-any-return]

        assert _run(attrs, "export", twice) is True
        assert proxy.count("PUT") == 1
    assert _calls(service, "CreateCacheEntry") == [200]
    assert _calls(service, "FinalizeCacheEntryUpload") == [200, 412]  # failed_precondition
