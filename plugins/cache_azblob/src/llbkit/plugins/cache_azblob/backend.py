"""``type=azblob``: the build cache in Azure Blob Storage, laid out as BuildKit's azblob cache.

The cache config (BuildKit's, its layers described inside) is the blob
``path.Join(prefix, manifests_prefix, name)`` of one container, each layer the blob
``path.Join(prefix, blobs_prefix, <digest>)``, so BuildKit and llbkit read each other's caches.
Attributes are BuildKit v0.11's, plus ``timeout``. The SDK's synchronous client runs in worker
threads: its async one would need aiohttp as well.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import posixpath
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from functools import partial
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import anyio

from llbkit.core.errors import ConfigError, UserError, check_options
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import checked_digest, verified_spool
from llbkit.core.plugins.cache_backend import Direction, IndexFormat, TransientCacheError
from llbkit.core.plugins.cacheconfig import merge_configs
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.core.units import parse_duration

#: BuildKit v0.11's keys, and llbkit's ``timeout``
OPTIONS = (
    "account_url",
    "container",
    "prefix",
    "manifests_prefix",
    "blobs_prefix",
    "name",
    "secret_access_key",
    "timeout",
)
#: read when the key is not given, as BuildKit does
ENV = {
    "account_url": "BUILDKIT_AZURE_STORAGE_ACCOUNT_URL",
    "container": "BUILDKIT_AZURE_STORAGE_CONTAINER",
    "prefix": "BUILDKIT_AZURE_STORAGE_PREFIX",
}
DEFAULTS = {
    "container": "buildkit-cache",
    "prefix": "",
    "manifests_prefix": "manifests",
    "blobs_prefix": "blobs",
    "name": "buildkit",
    #: how long a connection or a read may wait (the SDK's own default is 5 minutes)
    "timeout": "60s",
}
#: as BuildKit uploads: one request up to this size, else staged blocks of this size...
BLOCK = 32 << 20
#: ...this many at once, then committed (the blob appears only then)
CONCURRENCY = 4
#: each ranged GET of a download
CHUNK = 4 << 20
#: connections kept: core writes 4 blobs at once, each in CONCURRENCY blocks
POOL = 4 * CONCURRENCY + 4
#: Azure's rule: 3-63 lowercase letters, digits and single hyphens, no hyphen at either end
_CONTAINER = re.compile(r"(?=.{3,63}\Z)[a-z0-9]+(-[a-z0-9]+)*")
_THROTTLED = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
#: what an upload with If-None-Match: * answers when the blob exists (409, or 412 on a commit)
_THERE = frozenset({"BlobAlreadyExists", "ConditionNotMet"})
#: the SDK logs a cut download as a warning of its own; with no logging set up, Python would
#: print it as a stray line of the build's output, where llbkit's message already says it
_QUIET = logging.NullHandler()
T = TypeVar("T")


def go_path_join(*parts: str) -> str:
    """Go's ``path.Join``: the non-empty parts joined by ``/``, then cleaned (no ``//``,
    ``.`` or ``x/..``); ``""`` when every part is empty."""
    kept = [part for part in parts if part]
    if not kept:
        return ""
    joined = posixpath.normpath("/".join(kept))
    return "/" + joined.lstrip("/") if joined.startswith("/") else joined


def _public(url: str) -> str:
    """An account URL as messages may show it: no user, password or query (a SAS)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def account_name(parts: SplitResult) -> str:
    """The storage account an account URL names: its path's first segment in Azurite's
    path-style form (``http://127.0.0.1:10000/devstoreaccount1``), else the host's first label
    (``https://<account>.blob.core.windows.net``), as BuildKit reads it."""
    segment = parts.path.strip("/").split("/")[0]
    return segment or (parts.hostname or "").split(".")[0]


class AzblobCacheStore:
    """One opened cache: a container, its blob-name prefixes, its index names, one client."""

    def __init__(
        self,
        service: Any,
        *,
        container: str,
        prefix: str,
        manifests_prefix: str,
        blobs_prefix: str,
        names: list[str],
        endpoint: str,
        writable: bool,
        credential: Any = None,
        timeout: float = 60.0,
    ) -> None:
        self._service = service
        self._container = service.get_container_client(container)
        self._credential = credential  # DefaultAzureCredential's, closed with the store
        self.container = container
        self.manifests = go_path_join(prefix, manifests_prefix)
        self.blobs = go_path_join(prefix, blobs_prefix)
        self.names = names
        self.endpoint = endpoint
        self.writable = writable
        self.timeout = timeout

    @property
    def name(self) -> str:
        return f"azblob {self.container}/{self.manifest_key(self.names[0])}"

    @property
    def index_format(self) -> IndexFormat:
        return "config"  # BuildKit's azblob layout: the config is the index, no manifest

    def manifest_key(self, name: str) -> str:
        return go_path_join(self.manifests, name)

    def blob_key(self, digest: str) -> str:
        return go_path_join(self.blobs, checked_digest(digest))

    def _where(self, key: str) -> str:
        return f"{self.endpoint}/{self.container}/{key}"

    def _blob(self, key: str) -> Any:
        return self._container.get_blob_client(key)

    def _whole(self, key: str) -> bytes:
        return bytes(self._blob(key).download_blob().readall())

    def _replace(self, key: str, data: bytes) -> None:
        self._blob(key).upload_blob(data, overwrite=True)

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def _run(self, doing: str, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, its failures as llbkit's errors."""
        try:
            return await anyio.to_thread.run_sync(call)
        except Exception as err:  # the SDK's errors become llbkit's; a bug keeps its traceback
            self._fail(doing, err)

    async def _find(self, doing: str, call: Callable[[], T]) -> T | None:
        """As :meth:`_run`, ``None`` when the blob (or its container) is not there."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await anyio.to_thread.run_sync(call)
        except ResourceNotFoundError:  # BlobNotFound or ContainerNotFound: an answer
            return None
        except Exception as err:  # as in _run
            self._fail(doing, err)

    async def _write(self, doing: str, call: Callable[[], object]) -> None:
        """As :meth:`_run`, creating the container when it is missing (as BuildKit's export
        does) and taking "it is already there" as done: blob names are their content."""
        try:
            await anyio.to_thread.run_sync(self._creating, call)
        except Exception as err:  # as in _run
            self._fail(doing, err)

    def _creating(self, call: Callable[[], object]) -> None:
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        for attempt in (1, 2):
            try:
                call()
                return
            except (ResourceExistsError, ResourceModifiedError) as err:
                if _code(err) in _THERE:  # If-None-Match: * refused: someone wrote it first
                    return
                raise
            except ResourceNotFoundError as err:  # only a missing container is ours to fix
                if attempt == 2 or _code(err) != "ContainerNotFound":
                    raise
            # Another runner may have created it meanwhile.
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()

    def _fail(self, doing: str, err: Exception) -> NoReturn:
        """Raise ``err`` as the user should see it: transient (core tries again), refused, or
        a bug with its traceback. No message holds the service's text or the URL's query, so
        none carries a key or a SAS."""
        from azure.core import exceptions as az

        if isinstance(err, az.IncompleteReadError):  # cut mid-body: worth another try
            raise TransientCacheError(f"{doing}: the connection was cut") from None
        if isinstance(err, az.ClientAuthenticationError) and not err.status_code:
            # No answer from the service: the credential itself failed (no identity found).
            raise UserError(
                f"{doing}: no usable Azure credential ({type(err).__name__}); give "
                "secret_access_key= or a SAS in account_url=, or set up DefaultAzureCredential "
                "(AZURE_CLIENT_ID..., a managed identity, az login)"
            ) from None
        if isinstance(err, az.HttpResponseError) and not err.status_code:
            # No answer to blame: the SDK's download gave up on a body cut short or stalled
            # (it wraps what the transport raised). Worth another try.
            failed = self._what_failed(err.inner_exception or err)
            raise TransientCacheError(f"{doing}: {failed}") from None
        if isinstance(err, az.HttpResponseError):
            code, status = _code(err), err.status_code or 0
            said = f"{code or 'error'} (HTTP {status})"
            if code in _THROTTLED or status >= 500 or status in (408, 429):
                raise TransientCacheError(
                    f"{doing}: {said}", throttled=code == "ServerBusy" or status == 429
                ) from None
            if status in (401, 403) or isinstance(err, az.ClientAuthenticationError):
                raise UserError(
                    f"{doing}: access denied ({code or status}); check secret_access_key= (the "
                    "storage account's key), the SAS in account_url=, or the identity's role "
                    f"on container {self.container!r}"
                ) from None
            raise UserError(f"{doing}: {said}") from None
        if isinstance(err, az.ServiceRequestError | az.ServiceResponseError):
            # Refused, reset, timed out: worth another try.
            raise TransientCacheError(f"{doing}: {self._what_failed(err)}") from None
        raise err

    def _what_failed(self, err: BaseException | None) -> str:
        """A connection's failure in words: timed out, cut short, or not reached at all."""
        from azure.core import exceptions as az

        kind = type(err).__name__
        if isinstance(err, az.ServiceRequestTimeoutError | az.ServiceResponseTimeoutError):
            return f"{self.endpoint} did not answer within {self.timeout:g}s (timeout=; {kind})"
        if isinstance(err, az.ServiceResponseError | az.IncompleteReadError | az.DecodeError):
            return f"the connection to {self.endpoint} was cut ({kind})"
        return f"cannot reach {self.endpoint} ({kind})"

    async def read_index(self) -> bytes | None:
        """Every name's index, as one: BuildKit's azblob importer loads each name that exists
        and combines them (its s3 importer reads only the first)."""
        configs = []
        for name in self.names:
            key = self.manifest_key(name)
            data = await self._find(f"GET {self._where(key)}", partial(self._whole, key))
            if data is not None:
                configs.append(bytes(data))
        if not configs:
            return None
        try:
            return merge_configs(configs)
        except ValueError as err:  # not JSON, or not a cache config
            raise UserError(f"cache {self.name}: an index is not a cache config ({err})") from None

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        for name in self.names:
            key = self.manifest_key(name)
            # Last writer wins, as BuildKit's Upload of a manifest.
            await self._write(f"PUT {self._where(key)}", partial(self._replace, key, data))

    async def has_blob(self, digest: str) -> bool:
        key = self.blob_key(digest)
        found = await self._find(
            f"HEAD {self._where(key)}", lambda: self._blob(key).get_blob_properties()
        )
        return found is not None

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        key = self.blob_key(digest)
        doing = f"GET {self._where(key)}"
        download = await self._find(doing, lambda: self._blob(key).download_blob())
        if download is None:
            raise KeyError(digest)
        chunks: Iterator[bytes] = download.chunks()
        while (chunk := await self._run(doing, lambda: next(chunks, None))) is not None:
            if chunk:
                yield chunk

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        key = self.blob_key(digest)
        # Checked before a byte is sent: a container never holds a blob under a wrong digest.
        async with verified_spool(digest, size, chunks) as spool:

            def upload() -> None:
                # One Put Blob up to BLOCK, else BLOCK-sized blocks CONCURRENCY at once, then
                # one commit; If-None-Match: *, as BuildKit writes blobs.
                with spool.open("rb") as source:
                    self._blob(key).upload_blob(
                        source, length=size, overwrite=False, max_concurrency=CONCURRENCY
                    )

            await self._write(f"PUT {self._where(key)}", upload)

    def blob_source(self) -> BlobSource | None:
        return None  # not a registry: nothing for a push to mount

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._service.close)
        if self._credential is not None:
            await anyio.to_thread.run_sync(self._credential.close)


def _code(err: BaseException) -> str:
    """A storage error's code (``BlobNotFound``); ``""`` when it has none."""
    code = getattr(err, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _setting(attrs: Mapping[str, str], key: str) -> str:
    """A given key wins, even empty, as in BuildKit; else its environment variable (when set
    and not empty), else the default."""
    if key in attrs:
        return attrs[key]
    return os.environ.get(ENV.get(key, ""), "") or DEFAULTS.get(key, "")


def _make_client(account_url: str, credential: Any, timeout: float) -> Any:
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    logging.getLogger("azure").addHandler(_QUIET)  # once: the same handler is not added twice
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL)  # requests' own: no retries
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    transport = RequestsTransport(
        session=session,
        session_owner=True,
        # A stalled service is given up on in bounded time (and tried again by core).
        connection_timeout=timeout,
        read_timeout=timeout,
    )
    return BlobServiceClient(
        account_url,
        credential=credential,
        transport=transport,
        # Core tries a transient failure again, with backoff, for every backend alike.
        retry_total=0,
        max_single_put_size=BLOCK,
        max_block_size=BLOCK,
        max_single_get_size=CHUNK,
        max_chunk_get_size=CHUNK,
    )


class AzblobCacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> AzblobCacheStore:
        what = f"cache backend {self.ctx.name}"
        check_options(what, attrs, OPTIONS)
        account_url = _setting(attrs, "account_url")
        if not account_url:
            raise ConfigError(
                f"{what}: account_url= is required (or set ${ENV['account_url']}), such as "
                "https://<account>.blob.core.windows.net"
            )
        parts = urlsplit(account_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{what}: account_url= must be an http(s) URL such as "
                f"https://<account>.blob.core.windows.net (got {_public(account_url)!r})"
            )
        if parts.username or parts.password:
            raise ConfigError(
                f"{what}: account_url= takes no user or password; give the account key with "
                f"secret_access_key= (got {_public(account_url)!r})"
            )
        account = account_name(parts)
        if account.isdigit():  # an IP address's first byte: the account belongs in the path
            raise ConfigError(
                f"{what}: account_url= names no account; an emulator's takes it as the path "
                f"({_public(account_url)}/<account>)"
            )
        container = _setting(attrs, "container")
        if not _CONTAINER.fullmatch(container):
            raise ConfigError(
                f"{what}: container={container!r} is not a container name (3-63 lowercase "
                "letters, digits and single hyphens, starting and ending with a letter or digit)"
            )
        names = [n for n in _setting(attrs, "name").split(";") if n]
        if not names:
            raise ConfigError(f"{what}: name={attrs['name']!r} names no index")
        given = _setting(attrs, "timeout") or DEFAULTS["timeout"]
        timeout = parse_duration(given, f"{what}: timeout")
        if timeout <= 0:
            raise ConfigError(f"{what}: timeout={attrs['timeout']!r} is not a positive duration")
        credential, closable = _credential(what, attrs, account, parts)
        service = await anyio.to_thread.run_sync(
            lambda: _make_client(account_url, credential, timeout)
        )
        return AzblobCacheStore(
            service,
            container=container,
            prefix=_setting(attrs, "prefix"),
            manifests_prefix=_setting(attrs, "manifests_prefix"),
            blobs_prefix=_setting(attrs, "blobs_prefix"),
            names=names,
            endpoint=_public(account_url),
            writable=direction == "export",
            credential=closable,
            timeout=timeout,
        )


def _credential(
    what: str, attrs: Mapping[str, str], account: str, parts: SplitResult
) -> tuple[Any, Any]:
    """What the client signs with, and what to close with the store: the account key when
    given; a SAS in the URL's query as it is; else DefaultAzureCredential, if installed."""
    key = attrs.get("secret_access_key", "")
    if key:
        try:
            base64.b64decode(key, validate=True)
        except binascii.Error:  # the SDK would fail at the first request, less clearly
            raise ConfigError(
                f"{what}: secret_access_key= is not a storage account key (base64 text)"
            ) from None
        return {"account_name": account, "account_key": key}, None
    if parts.query:
        return None, None  # the SDK sends the URL's SAS with every request
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:  # an optional dependency: say how to do without it, or get it
        raise ConfigError(
            f"{what}: no credential for account {account!r}: give secret_access_key= (the "
            "storage account's key) or a SAS in account_url=, or install azure-identity "
            "(pip install 'llbkit-cache-azblob[identity]') to use DefaultAzureCredential"
        ) from None
    if parts.scheme != "https":  # azure-core sends no bearer token over plain http
        raise ConfigError(
            f"{what}: DefaultAzureCredential needs an https account_url=; for an emulator on "
            "http give secret_access_key="
        )
    identity = DefaultAzureCredential()
    return identity, identity
