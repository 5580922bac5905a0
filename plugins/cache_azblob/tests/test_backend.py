"""The azblob backend against Azurite on loopback: the kit, then its own behaviour."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
import sys
import types
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import anyio
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.plugins.cache_azblob.backend import (
    BLOCK,
    AzblobCacheBackend,
    account_name,
    go_path_join,
)
from llbkit.sdk.testing import (
    CacheBackendKit,
    CacheFaultKit,
    Fault,
    FaultProxy,
    HttpStore,
    MemoryClientIO,
    make_context,
)
from llbkit.sdk.testing.azurite import Azurite, azurite  # noqa: F401 - a fixture, used by name

_containers = itertools.count()


def fresh_container() -> str:
    """A container no test has used yet (Azurite lives for the whole session)."""
    return f"test-{next(_containers)}"


def attrs_for(server: Azurite, **more: str) -> dict[str, str]:
    return {"account_url": server.url, "secret_access_key": server.key, **more}


def blobs_of(server: Azurite, container: str) -> dict[str, int]:
    """Each blob's name and size in ``container`` (empty when it does not exist)."""
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(server.connection_string) as service:
        holder = service.get_container_client(container)
        if not holder.exists():
            return {}
        return {blob.name: blob.size for blob in holder.list_blobs()}


def read(server: Azurite, container: str, name: str) -> bytes:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(server.connection_string) as service:
        return bytes(service.get_blob_client(container, name).download_blob().readall())


class TestAzblobCacheBackend(CacheBackendKit):
    backend_class = AzblobCacheBackend

    @pytest.fixture(autouse=True)
    def _serve(self, azurite: Azurite) -> None:  # noqa: F811 - the fixture imported above
        self.server = azurite
        self.container = fresh_container()

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return attrs_for(self.server, container=self.container)


class TestAzblobCacheBackendFaults(CacheFaultKit):
    """Through a proxy that breaks requests; Azurite still checks every SharedKey signature
    (the proxy forwards the path and the signed headers as they are)."""

    backend_class = AzblobCacheBackend
    flavor = "azure"
    blob_size = BLOCK + (1 << 20)  # staged blocks, then a commit

    @pytest.fixture(autouse=True)
    def _serve(self, azurite: Azurite) -> None:  # noqa: F811 - the fixture imported above
        self.server = azurite
        self.upstream = f"http://127.0.0.1:{azurite.port}"
        self.container = fresh_container()
        self.secrets = (azurite.key,)

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        return {
            "account_url": f"{url}/{self.server.account}",
            "secret_access_key": self.server.key,
            "container": self.container,
            "timeout": str(self.timeout),
        }


def _open(attrs: Mapping[str, str], direction: str = "export") -> Any:
    backend = AzblobCacheBackend(make_context("azblob"))
    return backend.resolve(dict(attrs), direction, MemoryClientIO(Path("/nonexistent")))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _using(attrs: Mapping[str, str], use: Any, direction: str = "export") -> Any:
    """``await use(store)`` on a store opened with ``attrs``, closed after."""

    async def scenario() -> Any:
        store = await _open(attrs, direction)
        try:
            result = use(store)
            return await result if inspect.isawaitable(result) else result
        finally:
            await store.aclose()

    return anyio.run(scenario)


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("", "manifests", "buildkit"), "manifests/buildkit"),
        (("team/app/", "/blobs", "sha256:ab"), "team/app/blobs/sha256:ab"),
        (("a//b", "./c", ""), "a/b/c"),
        (("a", "../b", "c"), "b/c"),
        (("/abs", "x"), "/abs/x"),
        (("", "", ""), ""),
    ],
)
def test_blob_names_are_gos_path_join(parts: tuple[str, ...], joined: str) -> None:
    assert go_path_join(*parts) == joined


@pytest.mark.parametrize(
    ("url", "account"),
    [
        ("https://myacct.blob.core.windows.net", "myacct"),
        ("https://myacct.blob.core.windows.net/", "myacct"),
        ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1"),
        ("http://azurite:10000/devstoreaccount1/", "devstoreaccount1"),
    ],
)
def test_the_account_is_the_first_host_label_or_path_segment(url: str, account: str) -> None:
    assert account_name(urlsplit(url)) == account


def test_layout_is_buildkits_with_prefix_and_several_names(azurite: Azurite) -> None:  # noqa: F811
    data = b"layer bytes" * 1000
    container = fresh_container()
    attrs = attrs_for(azurite, container=container, prefix="team/app/", name="main;fallback")

    async def export(store: Any) -> str:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_index(b'{"layers":[]}')
        return str(store.name)

    name = _using(attrs, export)
    assert name == f"azblob {container}/team/app/manifests/main"
    assert blobs_of(azurite, container) == {
        f"team/app/blobs/{_digest(data)}": len(data),
        "team/app/manifests/main": 13,
        "team/app/manifests/fallback": 13,
    }
    assert read(azurite, container, f"team/app/blobs/{_digest(data)}") == data

    more = {**attrs, "manifests_prefix": "idx", "blobs_prefix": "", "prefix": ""}
    _using(more, lambda store: store.write_blob(_digest(b"x"), 1, _chunks(b"x")))
    _using(more, lambda store: store.write_index(b"{}"))
    assert {"idx/main", "idx/fallback", _digest(b"x")} <= set(blobs_of(azurite, container))


def test_an_import_reads_every_name_there_as_one_index(azurite: Azurite) -> None:  # noqa: F811
    """BuildKit's azblob importer loads each name and combines them (not the first only)."""
    container = fresh_container()

    def config(blob: str) -> bytes:
        layer = {"blob": blob, "parent": -1}
        record = {"digest": _digest(blob.encode()), "layers": [{"layer": 0}]}
        return json.dumps({"layers": [layer], "records": [record]}).encode()

    two, three = config(_digest(b"2")), config(_digest(b"3"))
    _using(attrs_for(azurite, container=container, name="second"), lambda s: s.write_index(two))
    _using(attrs_for(azurite, container=container, name="third"), lambda s: s.write_index(three))
    names = attrs_for(azurite, container=container, name="first;second;third")
    merged = json.loads(_using(names, lambda store: store.read_index(), "import"))
    assert [layer["blob"] for layer in merged["layers"]] == [_digest(b"2"), _digest(b"3")]
    assert [r["layers"] for r in merged["records"]] == [[{"layer": 0}], [{"layer": 1}]]
    only = attrs_for(azurite, container=container, name="first;third")
    assert _using(only, lambda store: store.read_index(), "import") == three
    nothing = attrs_for(azurite, container=container, name="none")
    assert _using(nothing, lambda store: store.read_index(), "import") is None
    broken = fresh_container()
    _using(attrs_for(azurite, container=broken, name="a"), lambda s: s.write_index(b"not json"))
    _using(attrs_for(azurite, container=broken, name="b"), lambda s: s.write_index(two))
    both = attrs_for(azurite, container=broken, name="a;b")
    with pytest.raises(UserError, match="an index is not a cache config"):
        _using(both, lambda store: store.read_index(), "import")


def test_an_export_creates_a_missing_container_and_an_import_does_not(
    azurite: Azurite,  # noqa: F811
) -> None:
    container = fresh_container()
    attrs = attrs_for(azurite, container=container)

    async def look(store: Any) -> tuple[object, bool]:
        with pytest.raises(KeyError):
            async for _ in store.read_blob(_digest(b"x")):
                pass
        return await store.read_index(), await store.has_blob(_digest(b"x"))

    assert _using(attrs, look, "import") == (None, False)
    assert blobs_of(azurite, container) == {}  # still no container
    _using(attrs, lambda store: store.write_blob(_digest(b"x"), 1, _chunks(b"x")))
    assert blobs_of(azurite, container) == {f"blobs/{_digest(b'x')}": 1}
    other = fresh_container()
    _using(attrs_for(azurite, container=other), lambda store: store.write_index(b"{}"))
    assert blobs_of(azurite, other) == {"manifests/buildkit": 2}


def test_the_environment_fills_in_what_is_not_given(
    azurite: Azurite,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = fresh_container()
    monkeypatch.setenv("BUILDKIT_AZURE_STORAGE_ACCOUNT_URL", azurite.url)
    monkeypatch.setenv("BUILDKIT_AZURE_STORAGE_CONTAINER", container)
    monkeypatch.setenv("BUILDKIT_AZURE_STORAGE_PREFIX", "from-env")
    key = {"secret_access_key": azurite.key}
    _using(key, lambda store: store.write_index(b"{}"))
    _using({**key, "prefix": ""}, lambda store: store.write_index(b"{}"))  # given wins, even ""
    assert set(blobs_of(azurite, container)) == {
        "from-env/manifests/buildkit",
        "manifests/buildkit",
    }

    monkeypatch.delenv("BUILDKIT_AZURE_STORAGE_CONTAINER")
    assert (
        _using(key, lambda store: store.name) == "azblob buildkit-cache/from-env/manifests/buildkit"
    )


def test_a_large_blob_goes_as_staged_blocks(azurite: Azurite) -> None:  # noqa: F811
    from azure.storage.blob import BlobServiceClient

    data = hashlib.sha256(b"seed").digest() * ((BLOCK + (8 << 20)) // 32)  # 40 MiB
    container = fresh_container()
    attrs = attrs_for(azurite, container=container)
    _using(attrs, lambda store: store.write_blob(_digest(data), len(data), _chunks(data)))

    async def back(store: Any) -> bytes:
        return b"".join([chunk async for chunk in store.read_blob(_digest(data))])

    assert _using(attrs, back, "import") == data
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        blob = service.get_blob_client(container, f"blobs/{_digest(data)}")
        committed, uncommitted = blob.get_block_list("all")
    assert [block.size for block in committed] == [BLOCK, 8 << 20]
    assert not uncommitted


def test_a_blob_already_there_is_not_written_again(azurite: Azurite) -> None:  # noqa: F811
    container = fresh_container()
    attrs = attrs_for(azurite, container=container)
    write = lambda store: store.write_blob(_digest(b"same"), 4, _chunks(b"same"))  # noqa: E731
    _using(attrs, write)
    _using(attrs, write)  # another runner's export of the same blob: If-None-Match refuses it
    assert read(azurite, container, f"blobs/{_digest(b'same')}") == b"same"


def test_a_blob_that_is_not_its_digest_is_never_sent(azurite: Azurite) -> None:  # noqa: F811
    container = fresh_container()
    with pytest.raises(ValueError, match="arrived as sha256:"):
        _using(
            attrs_for(azurite, container=container),
            lambda store: store.write_blob(_digest(b"expected"), 8, _chunks(b"tampered")),
        )
    assert blobs_of(azurite, container) == {}  # not even the container


def test_a_wrong_account_key_is_refused_in_one_line_without_the_key(
    azurite: Azurite,  # noqa: F811
) -> None:
    wrong = "A" * 8 + azurite.key[8:]
    attrs = attrs_for(azurite, container=fresh_container(), secret_access_key=wrong)
    for use in (
        lambda store: store.has_blob(_digest(b"x")),
        lambda store: store.write_index(b"{}"),
    ):
        with pytest.raises(UserError, match="access denied") as err:
            _using(attrs, use)
        assert not isinstance(err.value, TransientCacheError)
        message = str(err.value)
        assert "\n" not in message and wrong not in message and azurite.key not in message
        assert "secret_access_key=" in message


def test_a_sas_in_the_url_is_used_and_never_shown(azurite: Azurite) -> None:  # noqa: F811
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(
        azurite.account,
        azurite.key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    container = fresh_container()
    attrs = {"account_url": f"{azurite.url}?{sas}", "container": container}
    assert _using(attrs, lambda store: store.write_index(b"{}")) is None
    assert _using(attrs, lambda store: store.read_index(), "import") == b"{}"
    assert "sig=" not in _using(attrs, lambda store: store.name)
    tampered = {**attrs, "account_url": attrs["account_url"].replace("sig=", "sig=AA")}
    with pytest.raises(UserError, match="access denied") as err:
        _using(tampered, lambda store: store.read_index(), "import")
    assert "sig=" not in str(err.value)


@pytest.mark.parametrize(
    "fault", [Fault.stall(1.2), Fault.truncate(), Fault.reset(), Fault.fail(every=1)]
)
def test_a_failure_never_shows_the_sas(azurite: Azurite, fault: Fault) -> None:  # noqa: F811
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(
        azurite.account,
        azurite.key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", "azure") as proxy:
        attrs = {
            "account_url": f"{proxy.url}/{azurite.account}?{sas}",
            "container": fresh_container(),
            "timeout": "0.3",
        }
        _using(attrs, lambda store: store.write_index(b"{}"))
        proxy.fault = fault
        with pytest.raises(TransientCacheError) as err:
            _using(attrs, lambda store: store.read_index(), "import")
    assert "sig=" not in str(err.value) and "\n" not in str(err.value), err.value


def test_a_cut_download_prints_nothing_of_its_own(
    azurite: Azurite,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK logs "Incomplete download." as a warning; with no logging set up, Python would
    print it as a stray line of the build's output. The message says it, once, in one line."""
    import logging

    monkeypatch.setattr(logging.root, "handlers", [])  # as llbkit runs: pytest's taken away
    attrs = {**attrs_for(azurite, container=fresh_container()), "timeout": "0.3"}
    _using(attrs, lambda store: store.write_index(b'{"cut": "short", "and": "more"}'))
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", "azure", Fault.truncate()) as proxy:
        attrs["account_url"] = f"{proxy.url}/{azurite.account}"
        with pytest.raises(TransientCacheError, match="was cut"):
            _using(attrs, lambda store: store.read_index(), "import")
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == "", printed


def test_a_busy_or_unreachable_service_is_transient(tmp_path: Path) -> None:
    with HttpStore(tmp_path / "busy", fail_every=1) as busy:  # every request a 503
        attrs = {"account_url": f"{busy.url}/acct", "secret_access_key": "a2V5"}
        with pytest.raises(TransientCacheError, match="HTTP 503"):
            _using(attrs, lambda store: store.has_blob(_digest(b"x")))
    attrs = {"account_url": "http://127.0.0.1:1/acct", "secret_access_key": "a2V5"}
    with pytest.raises(
        TransientCacheError, match=re.escape("cannot reach http://127.0.0.1:1/acct")
    ):
        _using(attrs, lambda store: store.read_index(), "import")


def test_without_a_key_or_azure_identity_it_says_what_to_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"give secret_access_key=.*azure-identity"):
        anyio.run(lambda: _open({"account_url": "https://acct.blob.core.windows.net"}))


class _NoIdentity:
    """Stands in for azure-identity's DefaultAzureCredential when no identity is found."""

    closed = False

    def get_token(self, *scopes: str, **kwargs: object) -> NoReturn:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    def close(self) -> None:
        _NoIdentity.closed = True


def test_without_a_key_default_azure_credential_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = types.SimpleNamespace(DefaultAzureCredential=_NoIdentity)
    monkeypatch.setitem(sys.modules, "azure.identity", identity)
    with pytest.raises(ConfigError, match="needs an https account_url="):
        anyio.run(lambda: _open({"account_url": "http://127.0.0.1:1/acct"}))
    # The token is asked for before any request: no network is needed to see it refused.
    attrs = {"account_url": "https://acct.blob.core.windows.net", "container": "app"}
    with pytest.raises(UserError, match="no usable Azure credential") as err:
        _using(attrs, lambda store: store.has_blob(_digest(b"x")), "import")
    assert not isinstance(err.value, TransientCacheError)
    assert _NoIdentity.closed  # closed with the store


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({}, r"account_url= is required \(or set \$BUILDKIT_AZURE_STORAGE_ACCOUNT_URL\)"),
        ({"account_url": "ftp://x"}, "account_url= must be an http"),
        ({"account_url": "https://u:pw@a.blob.core.windows.net"}, "takes no user or password"),
        ({"account_url": "http://127.0.0.1:10000"}, "names no account"),
        ({"account_url": "https://a.b", "container": "No_Such"}, "container='No_Such'"),
        ({"account_url": "https://a.b", "container": "ab"}, "container='ab'"),
        ({"account_url": "https://a.b", "name": ";"}, "names no index"),
        ({"account_url": "https://a.b", "secret_access_key": "not base64!"}, "not a storage"),
        ({"account_url": "https://a.b", "timeout": "soon"}, "timeout: 'soon' is not a duration"),
        ({"account_url": "https://a.b", "timeout": "0"}, "timeout='0' is not a positive"),
    ],
)
def test_bad_attributes_are_refused_by_name(
    attrs: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in ("ACCOUNT_URL", "CONTAINER", "PREFIX"):
        monkeypatch.delenv(f"BUILDKIT_AZURE_STORAGE_{env}", raising=False)
    with pytest.raises(ConfigError, match=message) as err:
        anyio.run(lambda: _open(attrs))
    assert "pw" not in str(err.value) and "not base64!" not in str(err.value)


def test_an_unknown_key_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(UnknownOptionError, match=r"'account_key'.*secret_access_key"):
        anyio.run(lambda: _open({"account_url": "https://a.b", "account_key": "k"}))
