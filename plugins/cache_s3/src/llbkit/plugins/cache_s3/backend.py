"""``type=s3``: the build cache in an S3 bucket, laid out as BuildKit's s3 cache.

The cache config (BuildKit's, its layers described inside) is the object
``prefix + manifests_prefix + name``, each blob the object ``prefix + blobs_prefix + <digest>``,
so BuildKit and llbkit read each other's buckets. Attributes are BuildKit v0.11's, plus
``upload_parallelism`` and ``timeout``. botocore is synchronous: every call runs in a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from llbkit.core.errors import ConfigError, UserError, check_options, one_error
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import checked_digest
from llbkit.core.plugins.cache_backend import Direction, IndexFormat, TransientCacheError
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.core.units import parse_duration

#: BuildKit v0.11's keys, master's ``upload_parallelism``, and llbkit's ``timeout``
OPTIONS = (
    "bucket",
    "region",
    "prefix",
    "manifests_prefix",
    "blobs_prefix",
    "name",
    "touch_refresh",
    "endpoint_url",
    "use_path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "upload_parallelism",
    "timeout",
)
#: read when ``bucket=`` or ``region=`` is not given, as buildctl fills them in
ENV = {"bucket": "AWS_BUCKET", "region": "AWS_REGION"}
CHUNK = 1 << 20
#: how long a connection or a read may wait (botocore's own default too)
TIMEOUT = "60s"
#: blobs from this size up go in parts of this size, ``upload_parallelism`` at once
MULTIPART = 8 << 20
#: S3's limit on the parts of one upload
PARTS_MAX = 10_000
#: most blobs listed (one page) to answer existence checks; past that, a HEAD each. A page of
#: 100 costs about what 3 to 6 HEADs do (moto here: 0.24 s for 1,000, 0.07 s for 250), so a
#: large shared prefix loses little and a fresh or small one saves a round trip per blob
LISTED = 100
#: what says "no such object": get_object's code, and head_object's bare status (no body)
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})
#: S3's codes for a refused identity or signature, and head_object's bare statuses
_DENIED = frozenset(
    "AccessDenied AllAccessDisabled ExpiredToken InvalidAccessKeyId InvalidToken "  # noqa: SIM905 - words, not a column of quotes
    "SignatureDoesNotMatch TokenRefreshRequired 401 403".split()
)
#: S3's codes for "not now": throttled, overloaded, timed out (besides any 5xx or 429)
#: what S3 answers when asked to slow down: waited out longer than a failure
_SLOW_DOWN = frozenset(
    {
        "BandwidthLimitExceeded",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ServiceUnavailable",  # S3's 503: "Reduce your request rate"
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_THROTTLED = frozenset(
    "BandwidthLimitExceeded InternalError RequestLimitExceeded RequestThrottled "  # noqa: SIM905 - as above
    "RequestTimeout ServiceUnavailable SlowDown Throttling ThrottlingException "
    "TooManyRequestsException".split()
)
T = TypeVar("T")

if TYPE_CHECKING:
    from llbkit.plugins.cache_s3.models import KeptLoader


def _public(url: str) -> str:
    """An endpoint as messages may show it: no user, password or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class S3CacheStore:
    """One opened cache: a bucket, its key prefixes, its index names, one botocore client."""

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        region: str,
        prefix: str,
        manifests_prefix: str,
        blobs_prefix: str,
        names: list[str],
        touch_refresh: float,
        upload_parallelism: int,
        endpoint: str,
        writable: bool,
        timeout: float = 60.0,
    ) -> None:
        self._s3 = client
        self.bucket = bucket
        self.region = region
        self.manifests = prefix + manifests_prefix
        self.blobs = prefix + blobs_prefix
        self.names = names
        self.touch_refresh = touch_refresh
        self.endpoint = endpoint
        self.writable = writable
        self.timeout = timeout
        #: the blobs under the prefix when it was listed (key -> last written); None when the
        #: listing was too long or refused, and each blob is then asked about on its own
        self._listing: dict[str, datetime] | None = None
        self._listed = False
        self._list_lock = anyio.Lock()
        self.upload_parallelism = upload_parallelism

    @property
    def name(self) -> str:
        return f"s3 s3://{self.bucket}/{self.manifests}{self.names[0]}"

    @property
    def index_format(self) -> IndexFormat:
        return "config"  # BuildKit's s3 layout: the config is the index, no manifest

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _blob_key(self, digest: str) -> str:
        return self.blobs + checked_digest(digest)

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def _run(self, doing: str, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, its failures as llbkit's errors."""
        try:
            return await anyio.to_thread.run_sync(call)
        except Exception as err:  # botocore's errors become llbkit's; a bug keeps its traceback
            self._fail(doing, err)

    async def _find(self, doing: str, call: Callable[[], T]) -> T | None:
        """As :meth:`_run`, ``None`` when the object is not there."""
        try:
            return await anyio.to_thread.run_sync(call)
        except Exception as err:  # as in _run; a missing object is an answer, not a failure
            if _code(err)[0] in _ABSENT:
                return None
            self._fail(doing, err)

    def _fail(self, doing: str, err: Exception) -> NoReturn:
        """Raise ``err`` as the user should see it: transient (core tries again), refused, or
        a bug with its traceback. No message carries a credential: none holds S3's own text
        for a refusal, and the endpoint is shown without user, password or query."""
        from botocore import exceptions as aws

        code, status = _code(err)
        if isinstance(err, aws.ClientError):
            if code in _THROTTLED or status >= 500 or status == 429:
                raise TransientCacheError(
                    f"{doing}: {code} (HTTP {status})",
                    throttled=code in _SLOW_DOWN or status == 429,
                ) from None
            if code in _DENIED or status in (401, 403):
                raise UserError(
                    f"{doing}: access denied ({code}); check the credentials "
                    "(access_key_id=, secret_access_key=, session_token= or the AWS "
                    "environment) and the bucket's policy"
                ) from None
            if code == "NoSuchBucket":
                raise UserError(
                    f"{doing}: bucket {self.bucket!r} does not exist at {self.endpoint} "
                    f"(region {self.region}); create it, or fix bucket="
                ) from None
            raise UserError(f"{doing}: {code} (HTTP {status})") from None
        if isinstance(
            err, aws.ConnectionError | aws.HTTPClientError | aws.IncompleteReadError
        ):  # refused, cut, timed out: worth another try
            failed = _what_failed(err, self.endpoint, self.timeout)
            raise TransientCacheError(f"{doing}: {failed}") from None
        if isinstance(err, aws.NoCredentialsError | aws.PartialCredentialsError):
            raise UserError(
                f"{doing}: no AWS credentials; give access_key_id= and secret_access_key=, "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        raise err

    async def read_index(self) -> bytes | None:
        for name in self.names:
            key = self.manifests + name
            data = await self._find(f"GET {self._url(key)}", partial(self._get_whole, key))
            if data is not None:
                return data
        return None

    def _get_whole(self, key: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        for name in self.names:
            key = self.manifests + name
            put = partial(self._s3.put_object, Bucket=self.bucket, Key=key, Body=data)
            await self._run(f"PUT {self._url(key)}", put)

    async def has_blob(self, digest: str) -> bool:
        key = self._blob_key(digest)
        listing = await self._blob_listing()
        if listing is not None:  # a blob written since is sent again: the same bytes
            if key not in listing:
                return False
            modified = listing[key]
        else:
            head = await self._find(
                f"HEAD {self._url(key)}", lambda: self._s3.head_object(Bucket=self.bucket, Key=key)
            )
            if head is None:
                return False
            modified = head["LastModified"]
        # As BuildKit's export: a blob kept but not written lately is copied onto itself, so a
        # bucket lifecycle rule expiring old objects spares what builds still use.
        age = datetime.now(UTC) - modified
        if self.writable and age.total_seconds() > self.touch_refresh:
            await self._run(f"COPY {self._url(key)} (touch)", lambda: self._touch(key))
            if listing is not None:
                listing[key] = datetime.now(UTC)
        return True

    async def _blob_listing(self) -> dict[str, datetime] | None:
        """The blobs under the prefix, listed once: one request answers the many "is it
        there?" of an export or import, where a HEAD each costs a round trip each."""
        async with self._list_lock:
            if not self._listed:
                self._listed = True
                try:
                    self._listing = await anyio.to_thread.run_sync(self._list_blobs)
                except Exception:  # e.g. no s3:ListBucket in the policy: HEAD each blob
                    self._listing = None
        return self._listing

    def _list_blobs(self) -> dict[str, datetime] | None:
        got = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self.blobs, MaxKeys=LISTED)
        if got.get("IsTruncated"):
            return None  # a large shared cache: a HEAD per blob costs less than its listing
        return {item["Key"]: item["LastModified"] for item in got.get("Contents", [])}

    def _touch(self, key: str) -> None:
        self._s3.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={"updated-at": datetime.now(UTC).isoformat()},
        )

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        key = self._blob_key(digest)
        doing = f"GET {self._url(key)}"
        got = await self._find(doing, lambda: self._s3.get_object(Bucket=self.bucket, Key=key))
        if got is None:
            raise KeyError(digest)
        body = got["Body"]
        try:
            while chunk := await self._run(doing, lambda: body.read(CHUNK)):
                yield chunk
        finally:
            body.close()

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        key = self._blob_key(digest)
        # A bucket never holds a blob under a wrong digest: a small one is checked before it
        # is sent, a large one before its upload is completed.
        if size < MULTIPART:  # one PUT from memory
            data = await _verified_bytes(digest, size, chunks)
            put = partial(self._s3.put_object, Bucket=self.bucket, Key=key, Body=data)
            await self._run(f"PUT {self._url(key)}", put)
        else:
            await self._write_parts(key, digest, size, chunks)
        if self._listing is not None:
            self._listing[key] = datetime.now(UTC)

    async def _write_parts(
        self, key: str, digest: str, size: int, chunks: AsyncIterable[bytes]
    ) -> None:
        """A multipart upload fed as the blob streams in: each full part is sent while the
        next fills (at most ``upload_parallelism`` in flight, so that many held in memory),
        and the upload is completed, which makes the object visible, only once the whole
        blob hashed to ``digest``. A failure or a mismatch aborts it: no part is kept."""
        import hashlib

        checked_digest(digest)
        doing = f"PUT {self._url(key)}"
        target = {"Bucket": self.bucket, "Key": key}
        started = await self._run(doing, lambda: self._s3.create_multipart_upload(**target))
        upload = {**target, "UploadId": started["UploadId"]}
        etags: dict[int, str] = {}
        slots = anyio.Semaphore(self.upload_parallelism)

        async def send(number: int, body: bytes) -> None:
            try:
                part = partial(self._s3.upload_part, PartNumber=number, Body=body, **upload)
                etags[number] = (await self._run(doing, part))["ETag"]
            finally:
                slots.release()

        # S3 takes at most 10,000 parts: a blob beyond 80 GB goes in larger ones (whole MiB)
        part_size = max(MULTIPART, -(-size // (PARTS_MAX << 20)) << 20)
        hasher, got, number = hashlib.sha256(), 0, 0
        try:
            with one_error():
                async with anyio.create_task_group() as sending:
                    pending = bytearray()
                    async for chunk in chunks:
                        hasher.update(chunk)
                        got += len(chunk)
                        if got > size:  # never held beyond what was announced
                            break
                        pending += chunk
                        while len(pending) >= part_size or (got == size and pending):
                            body = bytes(pending[:part_size])
                            del pending[:part_size]
                            await slots.acquire()
                            number += 1
                            sending.start_soon(send, number, body)
            arrived = "sha256:" + hasher.hexdigest()
            if (arrived, got) != (digest, size):
                raise ValueError(f"blob {digest} ({size} bytes) arrived as {arrived} ({got} bytes)")
            listed = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            await self._run(
                doing,
                lambda: self._s3.complete_multipart_upload(
                    MultipartUpload={"Parts": listed}, **upload
                ),
            )
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(Exception):
                # best effort: the failure that got here is the one to report
                await anyio.to_thread.run_sync(lambda: self._s3.abort_multipart_upload(**upload))
            raise

    def blob_source(self) -> BlobSource | None:
        return None  # not a registry: nothing for a push to mount

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._s3.close)


async def _verified_bytes(digest: str, size: int, chunks: AsyncIterable[bytes]) -> bytes:
    """A small blob's bytes, once they are ``size`` bytes hashing to ``digest``."""
    import hashlib

    checked_digest(digest)
    parts, got = [], 0
    async for chunk in chunks:
        parts.append(chunk)
        got += len(chunk)
        if got > size:  # never held beyond what was announced
            break
    data = b"".join(parts)
    arrived = "sha256:" + hashlib.sha256(data).hexdigest()
    if (arrived, len(data)) != (digest, size):
        raise ValueError(f"blob {digest} ({size} bytes) arrived as {arrived} ({len(data)} bytes)")
    return data


def _what_failed(err: BaseException, endpoint: str, timeout: float) -> str:
    """A connection's failure in words: timed out, cut short, or not reached at all."""
    from botocore import exceptions as aws

    kind = type(err).__name__
    if isinstance(err, aws.ConnectTimeoutError | aws.ReadTimeoutError):
        return f"{endpoint} did not answer within {timeout:g}s (timeout=; {kind})"
    if isinstance(
        err, aws.IncompleteReadError | aws.ResponseStreamingError | aws.ConnectionClosedError
    ):
        return f"the connection to {endpoint} was cut ({kind})"
    return f"cannot reach {endpoint} ({kind})"


def _code(err: BaseException) -> tuple[str, int]:
    """A botocore ClientError's code and HTTP status; ``("", 0)`` for anything else."""
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


def _bool(what: str, key: str, value: str) -> bool:
    """Go's ``strconv.ParseBool`` words, as BuildKit reads ``use_path_style``."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ConfigError(f"{what}: {key}={value!r} is not a boolean (true or false)")


def _make_client(
    region: str,
    endpoint_url: str,
    path_style: bool,
    credentials: dict[str, str],
    *,
    pool: int,
    timeout: float,
    models: _Models,
) -> Any:
    # botocore's own session: boto3's without its resource layer, a tenth of a second less
    # to start, which a build exporting a few small layers notices
    from botocore.config import Config

    session = models.session()
    config = Config(
        s3={"addressing_style": "path" if path_style else "auto"},
        # Core tries a transient failure again, with backoff, for every backend alike.
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=pool,
        # A stalled service is given up on in bounded time (and tried again by core).
        connect_timeout=timeout,
        read_timeout=timeout,
        # No CRC32 trailers on every request and answer (botocore's default since 1.36), as
        # BuildKit's SDK sends none: S3-compatible stores that refuse them keep working, and
        # a blob is checked against its digest anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = session.create_client(
        "s3", region_name=region, endpoint_url=endpoint_url or None, config=config, **credentials
    )
    models.keep()
    return client


class _Models:
    """botocore's data loader (S3's service model, endpoint rules), shared by the clients of
    one engine: read once, a client takes 4 ms instead of 90; and read from what an earlier
    process kept in the driver's ``cache_dir`` (:mod:`.models`). Each client still has a
    session of its own, so credentials are looked up afresh every time."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._loader: Any = None
        self._kept: KeptLoader | None = None
        self._lock = threading.Lock()
        self._cache_dir = cache_dir

    def session(self) -> Any:
        import botocore.session

        session = botocore.session.Session()
        with self._lock:
            if self._loader is None:
                self._loader = self._first(session)
            session.register_component("data_loader", self._loader)
        return session

    def _first(self, session: Any) -> Any:
        try:
            from llbkit.plugins.cache_s3.models import kept_loader

            self._kept = kept_loader(session, self._cache_dir)
        except (ImportError, AttributeError, TypeError):  # a botocore that changed its loader
            return session.get_component("data_loader")
        return self._kept

    def keep(self) -> None:
        """Keep what the loader read, for the next process (after a client was made)."""
        if self._kept is not None:
            self._kept.save()


class S3CacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self._models = _Models(ctx.cache_dir)

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> S3CacheStore:
        what = f"cache backend {self.ctx.name}"
        check_options(what, attrs, OPTIONS)
        found = {}
        for key, env in ENV.items():
            found[key] = attrs.get(key) or os.environ.get(env, "")
            if not found[key]:
                raise ConfigError(f"{what}: {key}= is required (or set ${env})")
        names = [n for n in (attrs.get("name") or "buildkit").split(";") if n]
        if not names:
            raise ConfigError(f"{what}: name={attrs['name']!r} names no index")
        touch_refresh = parse_duration(
            attrs.get("touch_refresh") or "24h", f"{what}: touch_refresh"
        )
        timeout = parse_duration(attrs.get("timeout") or TIMEOUT, f"{what}: timeout")
        if timeout <= 0:
            raise ConfigError(f"{what}: timeout={attrs['timeout']!r} is not a positive duration")
        path_style = _bool(what, "use_path_style", attrs.get("use_path_style") or "false")
        try:
            parallelism = int(attrs.get("upload_parallelism") or 4)
        except ValueError:
            parallelism = 0
        if parallelism < 1:
            raise ConfigError(
                f"{what}: upload_parallelism={attrs['upload_parallelism']!r} is not a "
                "positive number"
            )
        endpoint_url = attrs.get("endpoint_url", "")
        parts = urlsplit(endpoint_url)
        if endpoint_url and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ConfigError(
                f"{what}: endpoint_url= must be an http(s) URL (got {_public(endpoint_url)!r})"
            )
        if parts.username or parts.password or parts.query:  # botocore refuses them anyway
            raise ConfigError(
                f"{what}: endpoint_url= takes no user, password or query; give credentials "
                f"with access_key_id= and secret_access_key= (got {_public(endpoint_url)!r})"
            )
        credentials = _credentials(what, attrs)
        # Core writes a few blobs at once, each in upload_parallelism parts: room for all.
        pool = max(10, 4 * parallelism + 4)
        # botocore's modules are imported here, on the event loop's thread, not by the worker:
        # imported by a worker while this thread imports others (httpx, for a registry), two
        # imports can take each other's module locks ("deadlock detected by _ModuleLock").
        import botocore.config
        import botocore.session  # noqa: F401

        s3 = await anyio.to_thread.run_sync(
            lambda: _make_client(
                found["region"],
                endpoint_url,
                path_style,
                credentials,
                pool=pool,
                timeout=timeout,
                models=self._models,
            )
        )
        return S3CacheStore(
            s3,
            bucket=found["bucket"],
            region=found["region"],
            prefix=attrs.get("prefix", ""),
            manifests_prefix=attrs.get("manifests_prefix", "manifests/"),
            blobs_prefix=attrs.get("blobs_prefix", "blobs/"),
            names=names,
            touch_refresh=touch_refresh,
            upload_parallelism=parallelism,
            endpoint=_public(endpoint_url) if endpoint_url else f"S3 ({found['region']})",
            writable=direction == "export",
            timeout=timeout,
        )


def _credentials(what: str, attrs: Mapping[str, str]) -> dict[str, str]:
    """Static credentials when given, else ``{}``: botocore's chain (environment, profile, role)."""
    key_id, secret = attrs.get("access_key_id", ""), attrs.get("secret_access_key", "")
    token = attrs.get("session_token", "")
    if not key_id and not secret:
        if token:
            raise ConfigError(f"{what}: session_token= needs access_key_id= and secret_access_key=")
        return {}
    if not key_id or not secret:
        raise ConfigError(f"{what}: access_key_id= and secret_access_key= go together")
    given = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    if token:
        given["aws_session_token"] = token
    return given
