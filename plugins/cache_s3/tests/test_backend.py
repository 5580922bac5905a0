"""The s3 backend against moto's S3 server on loopback: the kit, then its own behaviour."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.plugins.cache_s3.backend import S3CacheBackend
from llbkit.sdk.testing import CacheBackendKit, CacheFaultKit, MemoryClientIO, make_context

pytest.importorskip("moto.server", reason="moto[server] is not installed (uv sync installs it)")
pytestmark = pytest.mark.services

REGION = "us-east-1"
SECRET = "s3cret-never-shown"
_BUCKETS = itertools.count()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def bucket(endpoint: str) -> str:
    """A new, empty bucket for each test: moto keeps every bucket until it stops."""
    name = f"cache-{next(_BUCKETS)}"
    _s3(endpoint).create_bucket(Bucket=name)
    return name


def _attrs(endpoint: str, bucket: str, **more: str) -> dict[str, str]:
    return {
        "bucket": bucket,
        "region": REGION,
        "endpoint_url": endpoint,
        "use_path_style": "true",
        "access_key_id": "test",
        "secret_access_key": SECRET,
        **more,
    }


class TestS3CacheBackend(CacheBackendKit):
    backend_class = S3CacheBackend

    @pytest.fixture(autouse=True)
    def _bucket(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return _attrs(self.endpoint, self.bucket)


class TestS3CacheBackendFaults(CacheFaultKit):
    """Through a proxy that breaks requests; moto still checks every signature (the proxy
    forwards Host and the signed headers as they are)."""

    backend_class = S3CacheBackend
    flavor = "s3"
    secrets = (SECRET,)
    blob_size = 9 << 20  # a multipart upload, in 8 MiB parts

    @pytest.fixture(autouse=True)
    def _bucket(self, endpoint: str, bucket: str) -> Iterator[None]:
        from moto.core import enable_iam_authentication

        self.upstream, self.bucket = endpoint, bucket
        key = _iam_key(endpoint)
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.secrets = (SECRET, self.secret)
        with enable_iam_authentication():
            yield

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        return {
            **_attrs(url, self.bucket, timeout=str(self.timeout)),
            "access_key_id": self.key_id,
            "secret_access_key": self.secret,
        }


def _open(attrs: Mapping[str, str], direction: str = "export") -> Any:
    backend = S3CacheBackend(make_context("s3"))
    return backend.resolve(dict(attrs), direction, MemoryClientIO(Path("/nonexistent")))


def _run(attrs: Mapping[str, str], use: Any, direction: str = "export") -> Any:
    """Open a store, ``await use(store)``, close it."""

    async def scenario() -> Any:
        store = await _open(attrs, direction)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return anyio.run(scenario)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _keys(endpoint: str, bucket: str) -> list[str]:
    listed = _s3(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _write(data: bytes) -> Any:
    async def use(store: Any) -> None:
        await store.write_blob(_digest(data), len(data), _chunks(data))

    return use


def test_layout_is_buildkits_under_the_prefix(endpoint: str, bucket: str) -> None:
    data = b"layer bytes" * 1000

    async def use(store: Any) -> str:
        await store.write_blob(_digest(data), len(data), _chunks(data))
        await store.write_index(b'{"layers":[]}')
        return str(store.name)

    attrs = _attrs(endpoint, bucket, prefix="team/app/", name="main;fallback")
    name = _run(attrs, use)
    assert name == f"s3 s3://{bucket}/team/app/manifests/main"
    assert _keys(endpoint, bucket) == [
        f"team/app/blobs/{_digest(data)}",
        "team/app/manifests/fallback",
        "team/app/manifests/main",
    ]
    got = _s3(endpoint).get_object(Bucket=bucket, Key="team/app/manifests/fallback")
    assert got["Body"].read() == b'{"layers":[]}'

    renamed = _attrs(endpoint, bucket, manifests_prefix="idx-", blobs_prefix="b/", name="x")
    _run(renamed, lambda store: store.write_index(b"{}"))
    assert {"idx-x"} <= set(_keys(endpoint, bucket))


def test_an_import_reads_the_first_name_there(endpoint: str, bucket: str) -> None:
    attrs = _attrs(endpoint, bucket, name="first;second")
    assert _run(attrs, lambda store: store.read_index(), "import") is None
    _s3(endpoint).put_object(Bucket=bucket, Key="manifests/second", Body=b'{"second":1}')
    assert _run(attrs, lambda store: store.read_index(), "import") == b'{"second":1}'
    _s3(endpoint).put_object(Bucket=bucket, Key="manifests/first", Body=b'{"first":1}')
    assert _run(attrs, lambda store: store.read_index(), "import") == b'{"first":1}'


def test_an_import_store_writes_nothing(endpoint: str, bucket: str) -> None:
    with pytest.raises(PermissionError, match="opened for import only"):
        _run(_attrs(endpoint, bucket), lambda store: store.write_index(b"{}"), "import")
    assert _keys(endpoint, bucket) == []


def test_bucket_and_region_fall_back_to_the_environment(
    endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attrs = _attrs(endpoint, bucket)
    del attrs["bucket"], attrs["region"]
    monkeypatch.delenv("AWS_BUCKET", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(ConfigError, match=r"bucket= is required \(or set \$AWS_BUCKET\)"):
        anyio.run(lambda: _open(attrs))
    monkeypatch.setenv("AWS_BUCKET", bucket)
    with pytest.raises(ConfigError, match=r"region= is required \(or set \$AWS_REGION\)"):
        anyio.run(lambda: _open(attrs))
    monkeypatch.setenv("AWS_REGION", REGION)
    _run(attrs, lambda store: store.write_index(b"{}"))
    assert _keys(endpoint, bucket) == ["manifests/buildkit"]


def _updated_at(endpoint: str, bucket: str, key: str) -> str | None:
    head = _s3(endpoint).head_object(Bucket=bucket, Key=key)
    return head["Metadata"].get("updated-at")  # type: ignore[no-any-return]


def test_an_export_touches_a_blob_older_than_touch_refresh(endpoint: str, bucket: str) -> None:
    data = b"kept a long time" * 100
    digest, key = _digest(data), f"blobs/{_digest(data)}"
    _run(_attrs(endpoint, bucket), _write(data))
    before = _s3(endpoint).head_object(Bucket=bucket, Key=key)["LastModified"]

    def has(store: Any) -> Any:
        return store.has_blob(digest)

    # Younger than the default 24h: left alone; an import never touches.
    assert _run(_attrs(endpoint, bucket), has) is True
    assert _run(_attrs(endpoint, bucket, touch_refresh="0s"), has, "import") is True
    assert _updated_at(endpoint, bucket, key) is None
    # Older than touch_refresh: copied onto itself with new metadata, not uploaded again.
    assert _run(_attrs(endpoint, bucket, touch_refresh="0s"), has) is True
    assert _updated_at(endpoint, bucket, key)
    head = _s3(endpoint).head_object(Bucket=bucket, Key=key)
    assert head["LastModified"] >= before
    assert head["ContentLength"] == len(data)
    assert _s3(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_a_large_blob_goes_in_parts_and_round_trips(endpoint: str, bucket: str) -> None:
    data = hashlib.sha256(b"seed").digest() * ((9 << 20) // 32)  # 9 MiB: two parts
    digest = _digest(data)
    _run(_attrs(endpoint, bucket, upload_parallelism="2"), _write(data))
    head = _s3(endpoint).head_object(Bucket=bucket, Key=f"blobs/{digest}")
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # a multipart upload's ETag

    async def read(store: Any) -> list[bytes]:
        return [chunk async for chunk in store.read_blob(digest)]

    chunks = _run(_attrs(endpoint, bucket), read, "import")
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 1 << 20  # streamed in MiB chunks


def test_a_blob_that_is_not_its_digest_is_never_sent(endpoint: str, bucket: str) -> None:
    async def use(store: Any) -> None:
        await store.write_blob(_digest(b"expected"), 8, _chunks(b"tampered"))

    with pytest.raises(ValueError, match="arrived as sha256:"):
        _run(_attrs(endpoint, bucket), use)
    with pytest.raises(ValueError, match="arrived as sha256:"):  # the right bytes, wrong size
        _run(_attrs(endpoint, bucket), lambda s: s.write_blob(_digest(b"a"), 2, _chunks(b"a")))
    assert _keys(endpoint, bucket) == []


def _pending_uploads(endpoint: str, bucket: str) -> list[str]:
    listed = _s3(endpoint).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in listed.get("Uploads", [])]


def test_a_large_blob_streams_in_parts_in_order(endpoint: str, bucket: str) -> None:
    # 4 parts, 2 in flight: parts finish out of order and are listed in order
    data = b"".join(hashlib.sha256(b"%d" % n).digest() for n in range((25 << 20) // 32))
    _run(_attrs(endpoint, bucket, upload_parallelism="2"), _write(data))
    key = f"blobs/{_digest(data)}"
    assert _s3(endpoint).head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-4")
    assert _s3(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert _pending_uploads(endpoint, bucket) == []


def test_a_large_blob_that_is_not_its_digest_leaves_nothing(endpoint: str, bucket: str) -> None:
    data = b"x" * (17 << 20)  # three parts, all sent before the last byte is hashed
    wrong = _digest(b"something else")
    with pytest.raises(ValueError, match="arrived as sha256:"):
        _run(_attrs(endpoint, bucket), lambda s: s.write_blob(wrong, len(data), _chunks(data)))
    longer = _digest(data[: 9 << 20])  # more bytes than announced: refused, not held
    with pytest.raises(ValueError, match="arrived as sha256:"):
        _run(_attrs(endpoint, bucket), lambda s: s.write_blob(longer, 9 << 20, _chunks(data)))
    assert _keys(endpoint, bucket) == []
    assert _pending_uploads(endpoint, bucket) == []  # aborted: no parts kept, none billed


def test_a_stream_that_fails_midway_aborts_the_upload(endpoint: str, bucket: str) -> None:
    data = b"y" * (20 << 20)

    async def failing() -> AsyncIterator[bytes]:
        async for chunk in _chunks(data[: 12 << 20]):
            yield chunk
        raise OSError("the layer could not be read")

    with pytest.raises(OSError, match="could not be read"):
        _run(_attrs(endpoint, bucket), lambda s: s.write_blob(_digest(data), len(data), failing()))
    assert _keys(endpoint, bucket) == []
    assert _pending_uploads(endpoint, bucket) == []


def test_credentials_never_appear_in_names_or_messages(endpoint: str, bucket: str) -> None:
    from moto.core import enable_iam_authentication

    key = _iam_key(endpoint)
    good = _attrs(endpoint, bucket, access_key_id=key["AccessKeyId"])
    good["secret_access_key"] = key["SecretAccessKey"]
    wrong = {**good, "secret_access_key": SECRET}
    unknown = {**good, "access_key_id": "AKIAUNKNOWNUNKNOWN00", "session_token": "t0ken-x"}
    shown = endpoint.replace("http://", "http://user:pa55@") + "/?sig=abc"

    with enable_iam_authentication():
        assert _run(good, lambda store: store.read_index(), "import") is None
        for attrs, code in ((wrong, "SignatureDoesNotMatch"), (unknown, "InvalidAccessKeyId")):
            with pytest.raises(UserError, match=f"access denied \\({code}\\)") as err:
                _run(attrs, lambda store: store.read_index(), "import")
            assert not isinstance(err.value, TransientCacheError)
            _assert_secret_free(str(err.value))
            assert err.value.__cause__ is None and err.value.__suppress_context__
        with pytest.raises(UserError, match="access denied") as err:
            _run(wrong, lambda store: store.has_blob(_digest(b"x")))
        _assert_secret_free(str(err.value))
    with pytest.raises(ConfigError, match="takes no user, password or query") as err:
        anyio.run(lambda: _open({**wrong, "endpoint_url": shown}))
    _assert_secret_free(str(err.value))
    assert "sig=abc" not in str(err.value)
    with pytest.raises(TransientCacheError, match="cannot reach") as dead:  # nothing listens
        _run({**wrong, "endpoint_url": _dead()}, lambda store: store.read_index())
    _assert_secret_free(str(dead.value))


def _assert_secret_free(text: str) -> None:
    for secret in (SECRET, "t0ken-x", "pa55"):
        assert secret not in text, text


_USERS = itertools.count()


def _iam_key(endpoint: str) -> dict[str, str]:
    """A new IAM user allowed all of S3, and its access key: what signatures are checked
    against once moto's IAM authentication is on."""
    iam, user = _iam(endpoint), f"ci-{next(_USERS)}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3",
        PolicyDocument='{"Version":"2012-10-17","Statement":'
        '[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    return iam.create_access_key(UserName=user)["AccessKey"]  # type: ignore[no-any-return]


def _iam(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _dead() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_missing_bucket_is_named(endpoint: str) -> None:
    for use in (lambda store: store.write_index(b"{}"), _write(b"a blob")):
        with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist") as err:
            _run(_attrs(endpoint, "no-such-bucket"), use)
        assert not isinstance(err.value, TransientCacheError)


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("SlowDown", 503, "throttled"),
        ("ServiceUnavailable", 503, "throttled"),  # S3's words: "Reduce your request rate"
        ("InternalError", 500, "transient"),
        ("ThrottlingException", 400, "throttled"),
        ("RequestTimeout", 400, "transient"),
        ("AccessDenied", 403, "refused"),
        ("InvalidObjectState", 403, "refused"),
    ],
)
def test_throttling_and_5xx_are_transient_and_refusals_are_not(
    endpoint: str, bucket: str, code: str, status: int, outcome: str
) -> None:
    from botocore.stub import Stubber

    async def use(store: Any) -> None:
        with Stubber(store._s3) as stub:
            stub.add_client_error("put_object", code, http_status_code=status)
            await store.write_index(b"{}")

    with pytest.raises(UserError, match=code) as err:
        _run(_attrs(endpoint, bucket), use)
    assert isinstance(err.value, TransientCacheError) is (outcome != "refused")
    assert getattr(err.value, "throttled", False) is (outcome == "throttled")


def test_a_missing_blob_is_a_key_error_and_absent(endpoint: str, bucket: str) -> None:
    digest = _digest(b"never written")

    async def use(store: Any) -> bool:
        with pytest.raises(KeyError):
            async for _ in store.read_blob(digest):
                pass
        return bool(await store.has_blob(digest))

    assert _run(_attrs(endpoint, bucket), use) is False


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"upload_parallelism": "0"}, "upload_parallelism='0' is not a positive number"),
        ({"upload_parallelism": "many"}, "upload_parallelism='many'"),
        ({"touch_refresh": "soon"}, "touch_refresh: 'soon' is not a duration"),
        ({"timeout": "soon"}, "timeout: 'soon' is not a duration"),
        ({"timeout": "0s"}, "timeout='0s' is not a positive duration"),
        ({"use_path_style": "maybe"}, "use_path_style='maybe' is not a boolean"),
        ({"endpoint_url": "ftp://x"}, "endpoint_url= must be an http"),
        ({"name": ";"}, "name=';' names no index"),
        ({"secret_access_key": ""}, "access_key_id= and secret_access_key= go together"),
    ],
)
def test_bad_attributes_are_refused_by_name(attrs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        anyio.run(lambda: _open({**_attrs("http://127.0.0.1:9", "b"), **attrs}))
    assert SECRET not in str(err.value)


def test_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(UnknownOptionError, match="unknown option 'bucket_name'") as err:
        anyio.run(lambda: _open({**_attrs("http://127.0.0.1:9", "b"), "bucket_name": "x"}))
    assert "upload_parallelism" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize("listed", [100, 2])
def test_existence_is_answered_from_one_listing_unless_it_is_long(
    endpoint: str, bucket: str, listed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ListObjectsV2 answers every check of an export; past one page of the limit (here
    shrunk to 2), a HEAD per blob does. Either way: the same answers."""
    from llbkit.plugins.cache_s3 import backend

    monkeypatch.setattr(backend, "LISTED", listed)
    kept = [b"one", b"two", b"three"]
    for data in kept:
        _run(_attrs(endpoint, bucket), _write(data))
    calls: list[str] = []

    async def use(store: Any) -> list[bool]:
        store._s3.meta.events.register(
            "before-call.s3", lambda model, **_: calls.append(model.name)
        )
        found = [await store.has_blob(_digest(d)) for d in [*kept, b"absent"]]
        await _write(b"absent")(store)
        return [*found, await store.has_blob(_digest(b"absent"))]

    assert _run(_attrs(endpoint, bucket), use) == [True, True, True, False, True]
    if listed > len(kept):
        assert calls == ["ListObjectsV2", "PutObject"]
    else:
        assert calls.count("ListObjectsV2") == 1 and calls.count("HeadObject") == 5


def test_the_clients_of_one_engine_share_s3s_model_but_not_credentials(endpoint: str) -> None:
    """botocore's data (S3's model and endpoint rules) is read once per engine; each store's
    client has its own session and credentials."""
    backend = S3CacheBackend(make_context("s3"))

    async def two() -> list[Any]:
        stores = []
        for key_id in ("first", "second"):
            attrs = {**_attrs(endpoint, "b"), "access_key_id": key_id}
            stores.append(await backend.resolve(attrs, "export", MemoryClientIO(Path("/"))))
        for store in stores:
            await store.aclose()
        return [store._s3 for store in stores]

    first, second = anyio.run(two)
    assert first._loader is second._loader
    keys = [c._request_signer._credentials.access_key for c in (first, second)]
    assert keys == ["first", "second"]


def test_botocores_data_is_kept_for_the_next_process(
    endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """What botocore read to make the first client (S3's model, endpoint rules, the services)
    is kept in the driver's cache directory, without credentials; the next engine's client is
    made from it, reading no model file, and works. A damaged file is read past."""
    data = b"kept-model-blob"

    def store_of(backend: S3CacheBackend) -> Any:
        async def use() -> Any:
            store = await backend.resolve(
                _attrs(endpoint, bucket), "export", MemoryClientIO(Path("/nonexistent"))
            )
            await store.write_blob(_digest(data), len(data), _chunks(data))
            got = b"".join([chunk async for chunk in store.read_blob(_digest(data))])
            await store.aclose()
            return store, got

        return anyio.run(use)

    first, got = store_of(S3CacheBackend(make_context("s3", cache_dir=tmp_path / "c")))
    (kept,) = (tmp_path / "c").glob("botocore-*.marshal")
    assert got == data
    assert SECRET.encode() not in kept.read_bytes() and b"PutObject" in kept.read_bytes()
    written = kept.stat().st_ino
    second, got = store_of(S3CacheBackend(make_context("s3", cache_dir=tmp_path / "c")))
    assert got == data and second._s3._loader is not first._s3._loader
    assert kept.stat().st_ino == written  # nothing read that was not kept: nothing written
    kept.write_bytes(b"\x00 not marshal")
    store_of(S3CacheBackend(make_context("s3", cache_dir=tmp_path / "c")))
    assert b"PutObject" in kept.read_bytes()  # read past, and kept again


def test_a_kept_data_file_that_changed_is_read_again(tmp_path: Path) -> None:
    from llbkit.plugins.cache_s3.models import KeptFiles

    model = tmp_path / "service-2"
    model.with_suffix(".json").write_text('{"version": 1}')
    files = KeptFiles({})
    assert files.load_file(str(model)) == {"version": 1} and files.added
    model.with_suffix(".json").write_text('{"version": 22}')
    again = KeptFiles(files.kept)
    first = again.load_file(str(model))
    assert first == {"version": 22}
    first["merged"] = "in place, as botocore merges its extras"
    assert again.load_file(str(model)) == {"version": 22}  # each answer a copy of its own
    assert files.load_file(str(tmp_path / "absent")) is None
    damaged = KeptFiles({str(model.with_suffix(".json")): ("not", "a stamp", "or data")})
    assert damaged.load_file(str(model)) == {"version": 22}


def test_requests_carry_no_checksum_trailers(endpoint: str, bucket: str) -> None:
    """As BuildKit's SDK: no CRC32 headers or aws-chunked bodies (S3-compatible stores that
    predate them refuse them); a blob is checked against its digest instead."""
    sent: list[dict[str, str]] = []

    async def use(store: Any) -> None:
        store._s3.meta.events.register(
            "before-send.s3", lambda request, **_: sent.append(dict(request.headers))
        )
        await _write(b"checked by its digest")(store)

    _run(_attrs(endpoint, bucket), use)
    assert sent
    for headers in sent:
        names = {name.lower() for name in headers}
        assert not any(name.startswith("x-amz-checksum") for name in names), headers
        assert "x-amz-sdk-checksum-algorithm" not in names and "x-amz-trailer" not in names
