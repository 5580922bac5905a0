"""``type=gha``: the build cache in the GitHub Actions cache service, as BuildKit keeps it.

Both protocols of BuildKit's client, go-actions-cache: v1 REST (``<url>_apis/artifactcache/``,
the bytes sent to the service itself) and v2 Twirp (``<url>/twirp/…CacheService/``, the bytes
in Azure Blob Storage behind signed URLs the service hands out). Entries are write-once and
keyed alike in both: a blob is ``buildkit-blob-1-<digest>``, and the index (the cache config,
its layers described inside) is saved "mutably", each export adding ``<key>#<n+1>`` and a reader
taking the newest ``<key>#…``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import checked_digest, verified_spool
from llbkit.core.plugins.cache_backend import Direction, IndexFormat, TransientCacheError
from llbkit.core.plugins.cacheconfig import merge_configs
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.core.units import parse_duration
from llbkit.plugins.cache_gha._token import Scope, parse_token

if TYPE_CHECKING:
    import httpx

OPTIONS = ("url", "url_v2", "token", "scope", "timeout", "version")
URL_ENV = "ACTIONS_CACHE_URL"
RESULTS_URL_ENV = "ACTIONS_RESULTS_URL"
V2_ENV = "ACTIONS_CACHE_SERVICE_V2"
TOKEN_ENV = "ACTIONS_RUNTIME_TOKEN"
#: without version=, BuildKit takes a URL on this host for the v2 service
RESULTS_HOST = "results-receiver.actions.githubusercontent.com"
#: go-actions-cache sends one constant version with every key, in both protocols
VERSION = hashlib.sha256(b"|go-actionscache-1.0").hexdigest()
ACCEPT = "application/json;api-version=6.0-preview.1"
USER_AGENT = "go-actions-cache/1.0"  # the service knows BuildKit's client by it
TWIRP_SERVICE = "twirp/github.actions.results.api.v1.CacheService/"
#: the Blob Storage REST version sent to signed URLs (the SAS carries its own ``sv``)
AZURE_VERSION = "2023-11-03"
#: Twirp error codes worth trying again: the ones Twirp maps to a 5xx, 429 or 408
TRANSIENT_CODES = frozenset(
    {"resource_exhausted", "unavailable", "internal", "unknown", "deadline_exceeded", "aborted"}
)
#: the "1" in BuildKit's key names: its cache layout version
LAYOUT = "1"
CHUNK = 32 << 20
UPLOADERS = 4
READ_CHUNK = 1 << 20
#: ``<key>#<n>`` taken by others before this export gets one: give up after so many
MAX_INDEX_TRIES = 50
#: once a key is reserved only its reserver can finish it, so its uploads are tried again here
UPLOAD_ATTEMPTS = 5
#: strconv.ParseBool's spellings: ACTIONS_CACHE_SERVICE_V2 is read as Go reads it
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}

_T = TypeVar("_T")
#: a SAS signature wherever a message might carry one
_SIGNATURE = re.compile(r"(?i)\bsig=[^&\s'\"]*")


def blob_key(digest: str) -> str:
    return f"buildkit-blob-{LAYOUT}-{digest}"


def index_key(scope: str, token_scope: str) -> str:
    """The index of ``scope=`` as written from a job whose token grants ``token_scope``."""
    return f"index-{scope}-{LAYOUT}-{hashlib.sha256(token_scope.encode()).hexdigest()[:8]}"


def _public(url: str) -> str:
    """``url`` as messages may show it: no user, password or query (signatures)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrubbed(error: Exception, url: str) -> str:
    """An HTTP library's message about ``url``, its query (a signature) cut out, even where
    the library spelled it another way."""
    text = str(error) or type(error).__name__
    query = urlsplit(url).query
    if query:
        text = text.replace(query, "…")
    return _SIGNATURE.sub("sig=…", text)


@dataclass(frozen=True)
class Endpoint:
    """The service a cache talks to: its URL, the protocol (1 or 2), and the attribute the URL
    is named by in messages (``url`` or ``url_v2``, whether given or from the environment)."""

    url: str
    protocol: int
    key: str


def _version(raw: str, what: str) -> int:
    """``version=`` as Go's ``strconv.ParseInt(raw, 10, 64)`` takes it."""
    if re.fullmatch(r"[+-]?[0-9]+", raw) is None or not -(2**63) <= int(raw) < 2**63:
        raise ConfigError(f"{what}: version={raw!r} is not an integer (1 or 2)")
    return int(raw)


def resolve_endpoint(attrs: Mapping[str, str], environ: Mapping[str, str], what: str) -> Endpoint:
    """BuildKit's choice of URL and protocol: buildctl's environment fallbacks, then the
    daemon's reading of ``version``/``url_v2``/``url``. llbkit's CLI is its own client, so the
    plugin does both; a value left empty counts as not given."""
    raw = attrs.get("version")
    # buildctl: $ACTIONS_CACHE_SERVICE_V2 only decides whether $ACTIONS_RESULTS_URL is url_v2
    wanted = raw if raw is not None else ("2" if _GO_BOOLS.get(environ.get(V2_ENV, "")) else "")
    url_v2 = attrs.get("url_v2") or (environ.get(RESULTS_URL_ENV, "") if wanted == "2" else "")
    url = attrs.get("url") or environ.get(URL_ENV) or environ.get(RESULTS_URL_ENV) or ""
    version = 0 if raw is None else _version(raw, what)
    if version != 1 and url_v2:
        return Endpoint(url_v2, 2, "url_v2")
    if not url:
        raise ConfigError(
            f"{what}: url= is required (or set ${URL_ENV}); "
            f"the v2 service takes url_v2= (or ${RESULTS_URL_ENV})"
        )
    if version == 0:  # BuildKit's guess for clients that send no version
        version = 2 if RESULTS_HOST in url else 1
    return Endpoint(url, 2 if version > 1 else 1, "url")


@dataclass(frozen=True)
class _Found:
    """A committed entry a lookup found: its key and the signed URL of its bytes."""

    key: str
    url: str


class _Taken(UserError):
    """The service's "already exists": the key is reserved or written (Go's ``os.ErrExist``)."""


class GhaCacheStore:
    """One opened cache: the service, the index keys the token's scopes give, two clients
    (the API with the token, signed URLs without)."""

    def __init__(
        self,
        base: str,
        scope: str,
        token: str,
        scopes: list[Scope],
        *,
        timeout: float,
        export: bool,
        protocol: int = 1,
    ) -> None:
        import httpx

        self.protocol = protocol
        self.scope = scope
        writable = [s.scope for s in scopes if s.writable]
        self.writable = export
        self.export_key = index_key(scope, writable[-1]) if export and writable else ""
        self.import_keys = list(
            dict.fromkeys(index_key(scope, s.scope) for s in scopes if s.readable)
        )
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        if protocol == 2:
            self.base = base.rstrip("/") + "/"
            self.api = self.base + TWIRP_SERVICE
            headers["Content-Type"] = "application/json"
        else:
            self.base = base
            self.api = base + "_apis/artifactcache/"
            headers["Accept"] = ACCEPT
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._signed = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, timeout=timeout)

    @property
    def name(self) -> str:
        version = " v2" if self.protocol == 2 else ""
        return f"gha{version} {_public(self.base)} scope={self.scope}"

    @property
    def index_format(self) -> IndexFormat:
        return "config"  # BuildKit's config with its layers described: no manifest to keep

    async def _send(
        self, method: str, url: str, client: httpx.AsyncClient | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; a 5xx, a 429 or a timeout is transient (core tries again)."""
        import httpx

        what = f"{method} {_public(url)}"
        try:
            response = await (client or self._http).request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise TransientCacheError(f"{what}: timed out") from None
        except httpx.HTTPError as err:
            raise TransientCacheError(f"{what}: {_scrubbed(err, url)}") from None
        _check_transient(response, what)
        if response.status_code in (401, 403):
            _denied(what, response.status_code)
        return response

    async def _twirp(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One v2 call: a JSON object back, or the Twirp error as a one-line error (``_Taken``
        for ``already_exists``, transient for what Twirp maps to a 5xx or 429)."""
        url = self.api + method
        what = f"POST {_public(url)}"
        response = await self._send("POST", url, json=body)
        if 200 <= response.status_code < 300:
            try:
                reply = response.json()
            except ValueError:  # not JSON (a proxy's page, say)
                reply = None
            if not isinstance(reply, dict):
                raise UserError(f"{what}: the answer is not a JSON object")
            return reply
        code, _ = _twirp_error(response)
        detail = f"HTTP {response.status_code} {response.reason_phrase}{_detail(response)}"
        if code == "already_exists":
            raise _Taken(f"{what}: {detail}")
        if code in TRANSIENT_CODES:
            raise TransientCacheError(f"{what}: {detail}", throttled=code == "resource_exhausted")
        if code in ("unauthenticated", "permission_denied"):
            _denied(what, response.status_code)
        raise UserError(f"{what}: {detail}")

    async def _lookup(self, key: str) -> _Found | None:
        """The newest committed entry whose key starts with ``key`` (BuildKit's ``Load``)."""
        if self.protocol == 2:
            return await self._lookup_v2(key)
        response = await self._send(
            "GET", self.api + "cache", params={"keys": key, "version": VERSION}
        )
        if response.status_code == 204:
            return None
        _expect(response)
        entry = response.json() if response.content else {}
        if not isinstance(entry, dict) or not entry.get("cacheKey"):
            return None
        if not entry.get("archiveLocation"):
            raise UserError(
                f"GET {_public(self.api)}cache: entry {entry['cacheKey']} has no archiveLocation"
            )
        return _Found(str(entry["cacheKey"]), str(entry["archiveLocation"]))

    async def _lookup_v2(self, key: str) -> _Found | None:
        # As go-actions-cache asks: the key itself, then the key as a prefix (a restore key).
        body = {"key": key, "restore_keys": [key], "version": VERSION}
        reply = await self._twirp("GetCacheEntryDownloadURL", body)
        matched = reply.get("matched_key")
        if not reply.get("ok") or not matched:
            return None
        url = reply.get("signed_download_url")
        if not url or not isinstance(url, str):
            raise UserError(
                f"POST {_public(self.api)}GetCacheEntryDownloadURL: entry {matched} has no "
                "signed_download_url"
            )
        return _Found(str(matched), url)

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def read_index(self) -> bytes | None:
        configs = []
        for key in self.import_keys:
            found = await self._lookup(key + "#")
            if found is None:
                continue
            try:
                chunks = [chunk async for chunk in self._archive(found, key + "#", key)]
            except KeyError:  # evicted between lookup and download: as if never written
                continue
            configs.append(b"".join(chunks))
        if not configs:
            return None
        try:
            merged: bytes = merge_configs(configs)
        except ValueError as err:  # not JSON, or not a cache config
            raise UserError(f"cache {self.name}: an index is not a cache config ({err})") from None
        return merged

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        key = self.export_key
        newest = await self._lookup(key + "#")
        taken = 0
        if newest is not None:
            try:
                taken = int(newest.key.removeprefix(key + "#"))
            except ValueError:
                raise UserError(f"cache {self.name}: invalid index key {newest.key!r}") from None

        async def read(start: int, length: int) -> bytes:
            return data[start : start + length]

        for number in range(taken + 1, taken + 1 + MAX_INDEX_TRIES):
            if await self._save(f"{key}#{number}", len(data), read):
                return
        raise TransientCacheError(f"cache {self.name}: {key}#… kept being taken by other exports")

    async def has_blob(self, digest: str) -> bool:
        key = blob_key(checked_digest(digest))
        found = await self._lookup(key)
        return found is not None and found.key == key

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        key = blob_key(checked_digest(digest))
        found = await self._lookup(key)
        if found is None or found.key != key:
            raise KeyError(digest)
        async for chunk in self._archive(found, key, digest):
            yield chunk

    async def _archive(self, found: _Found, lookup: str, missing: str) -> AsyncIterator[bytes]:
        """An entry's bytes from its signed URL: no token is sent there. A v2 URL refused with
        401/403 has likely expired; it is asked for once more, as go-actions-cache does."""
        import httpx

        url = found.url
        headers = {"x-ms-version": AZURE_VERSION} if self.protocol == 2 else {}
        for attempt in (1, 2):
            what = f"GET {_public(url)}"
            expired = False
            try:
                async with self._signed.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status in (401, 403) and self.protocol == 2 and attempt == 1:
                        expired = True
                    else:
                        if status == 404:
                            raise KeyError(missing)
                        _check_transient(response, what)
                        if not 200 <= status < 300:
                            said = f"HTTP {status} {response.reason_phrase}{_detail(response)}"
                            raise UserError(f"{what}: {said}")
                        async for chunk in response.aiter_bytes(READ_CHUNK):
                            yield chunk
            except httpx.HTTPError as err:  # a cut connection or a timeout: the whole blob again
                raise TransientCacheError(f"{what}: {_scrubbed(err, url)}") from None
            if not expired:
                return
            renewed = await self._lookup(lookup)
            if renewed is None:  # evicted meanwhile
                raise KeyError(missing)
            url = renewed.url

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        key = blob_key(checked_digest(digest))
        # Checked before a byte is sent: the service never holds a blob under a wrong digest.
        async with verified_spool(digest, size, chunks) as spool:

            async def read(start: int, length: int) -> bytes:
                return await anyio.to_thread.run_sync(_read_range, spool, start, length)

            if not await self._save(key, size, read) and not await self.has_blob(digest):
                # Taken but not committed: an export still writing it, or one that died (ours,
                # tried again). Naming it in the index would name a blob that is not there.
                raise UserError(
                    f"cache {self.name}: blob {digest} is reserved by an export that has not "
                    "finished it; export again later"
                )

    async def _save(
        self, key: str, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> bool:
        """Reserve ``key``, upload, commit; ``False`` when the key is already taken."""
        if self.protocol == 2:
            return await self._save_v2(key, size, read)
        response = await self._send(
            "POST", self.api + "caches", json={"key": key, "version": VERSION}
        )
        if _already_exists(response):
            return False
        _expect(response)
        body = response.json() if response.content else {}
        # Go decodes JSON case-insensitively: the service may say cacheId or cacheID.
        found = {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
        cache_id = int(found.get("cacheid") or 0)
        if not cache_id:
            raise UserError(f"POST {_public(self.api)}caches: no cacheId for {key}")
        url = f"{self.api}caches/{cache_id}"
        try:
            await self._fill(url, size, read)
        except TransientCacheError as err:
            # Reserved now: trying the whole upload again would find the key taken by this
            # very attempt. The uploads were already tried with patience; this is final.
            raise UserError(str(err)) from None
        return True

    async def _fill(
        self, url: str, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> None:
        """Upload a reserved v1 entry's bytes in chunks, several at once, then commit it."""

        async def upload(start: int) -> None:
            data = await read(start, min(CHUNK, size - start))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{start + len(data) - 1}/*",
            }
            await _patient(partial(self._ok, "PATCH", url, content=data, headers=headers))

        await _in_parallel(list(range(0, size, CHUNK)), upload)
        await _patient(partial(self._ok, "POST", url, json={"size": size}))

    async def _ok(self, method: str, url: str, **kwargs: Any) -> None:
        _expect(await self._send(method, url, **kwargs))

    async def _save_v2(
        self, key: str, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> bool:
        what = f"POST {_public(self.api)}CreateCacheEntry"
        try:
            reply = await self._twirp("CreateCacheEntry", {"key": key, "version": VERSION})
        except _Taken:
            return False
        url = reply.get("signed_upload_url")
        if not reply.get("ok") or not url or not isinstance(url, str):
            raise UserError(f"{what}: the service reserved {key} without an upload URL")
        if urlsplit(url).scheme not in ("http", "https"):
            raise UserError(f"{what}: the upload URL for {key} is not an http(s) URL")
        try:
            await self._upload(url, size, read)
            await _patient(partial(self._finalize, key, size))
        except TransientCacheError as err:  # reserved now: final, as in _save
            raise UserError(str(err)) from None
        return True

    async def _upload(
        self, url: str, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> None:
        """The bytes to a signed Blob Storage URL as Azure takes them: one Put Blob when they
        fit a chunk, else blocks (several at once) and the block list that commits them."""
        if size <= CHUNK:
            data = await read(0, size)
            headers = {"x-ms-blob-type": "BlockBlob"}
            await _patient(partial(self._put, url, data, headers))
            return
        starts = list(range(0, size, CHUNK))
        # Azure wants every block id of a blob the same length before base64.
        ids = [base64.b64encode(f"llbkit-{n:08d}".encode()).decode() for n in range(len(starts))]

        async def stage(number: int) -> None:
            start = starts[number]
            data = await read(start, min(CHUNK, size - start))
            block = _with_query(url, {"comp": "block", "blockid": ids[number]})
            await _patient(partial(self._put, block, data, {}))

        await _in_parallel(list(range(len(starts))), stage)
        listing = "".join(f"<Latest>{block_id}</Latest>" for block_id in ids)
        body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'
        commit = _with_query(url, {"comp": "blocklist"})
        headers = {"Content-Type": "application/xml"}
        await _patient(partial(self._put, commit, body.encode(), headers))

    async def _put(self, url: str, data: bytes, headers: Mapping[str, str]) -> None:
        """One write to a signed URL: never the token; a 5xx, 429 or timeout is transient."""
        import httpx

        what = f"PUT {_public(url)}"
        try:
            response = await self._signed.put(
                url, content=data, headers={"x-ms-version": AZURE_VERSION, **headers}
            )
        except httpx.TimeoutException:
            raise TransientCacheError(f"{what}: timed out") from None
        except httpx.HTTPError as err:
            raise TransientCacheError(f"{what}: {_scrubbed(err, url)}") from None
        _check_transient(response, what)
        status = response.status_code
        if status in (401, 403):
            raise UserError(
                f"{what}: the signed upload URL was refused (HTTP {status}{_detail(response)}); "
                "it may have expired"
            )
        if not 200 <= status < 300:
            raise UserError(f"{what}: HTTP {status} {response.reason_phrase}{_detail(response)}")

    async def _finalize(self, key: str, size: int) -> None:
        body = {"key": key, "size_bytes": size, "version": VERSION}
        reply = await self._twirp("FinalizeCacheEntryUpload", body)
        if not reply.get("ok"):
            raise UserError(
                f"POST {_public(self.api)}FinalizeCacheEntryUpload: the service did not "
                f"finalize {key}"
            )

    def blob_source(self) -> BlobSource | None:
        return None  # not a registry: nothing for a push to mount

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._signed.aclose()


async def _patient(call: Callable[[], Awaitable[None]]) -> None:
    delay = 0.2
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            return await call()
        except TransientCacheError:
            if attempt == UPLOAD_ATTEMPTS:
                raise
        await anyio.sleep(delay)
        delay = min(delay * 2, 3.0)


async def _in_parallel(items: list[_T], work: Callable[[_T], Awaitable[None]]) -> None:
    """``work`` on every item, ``UPLOADERS`` at a time; the first failure is raised alone."""
    pending = list(items)

    async def worker() -> None:
        while pending:
            await work(pending.pop(0))

    try:
        async with anyio.create_task_group() as group:
            for _ in range(min(UPLOADERS, len(pending))):
                group.start_soon(worker)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """A signed URL with more query parameters (Azure's ``comp=…``) after its signature."""
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _denied(what: str, status: int) -> None:
    raise UserError(f"{what}: access denied (HTTP {status}); is {TOKEN_ENV} the current job's?")


def _twirp_error(response: httpx.Response) -> tuple[str, str]:
    """The ``code`` and ``msg`` of a Twirp error body (``""`` when there is none)."""
    import httpx

    try:
        body = response.json()
    except (httpx.ResponseNotRead, ValueError):  # streamed, empty or not JSON
        return "", ""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return "", ""
    said = " ".join(str(body.get("msg") or "").split())[:200]
    return body["code"], _SIGNATURE.sub("sig=…", said)


def _detail(response: httpx.Response) -> str:
    """What the far end said about a failure, in brief: Azure's error code, a Twirp code."""
    if azure := response.headers.get("x-ms-error-code"):
        return f" ({azure})"
    code, message = _twirp_error(response)
    if not code:
        return ""
    return f" ({code}: {message})" if message else f" ({code})"


def _check_transient(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status >= 500 or status == 429:
        throttled = status == 429 or response.headers.get("x-ms-error-code") == "ServerBusy"
        raise TransientCacheError(f"{what}: HTTP {status}{_detail(response)}", throttled=throttled)


def _already_exists(response: httpx.Response) -> bool:
    """The v1 service's "already exists" (BuildKit's client maps it to ``os.ErrExist``)."""
    if response.status_code == 409:
        return True
    if response.status_code < 400:
        return False
    try:
        body = response.json()
    except ValueError:  # no JSON error body: not the service's conflict
        return False
    if not isinstance(body, dict):
        return False
    return "AlreadyExists" in str(body.get("typeKey", "")) or "already exists" in str(
        body.get("message", "")
    )


def _expect(response: httpx.Response) -> None:
    if 200 <= response.status_code < 300:
        return
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            detail = f": {body['message']}"
    except ValueError:  # a plain-text or empty error body
        pass
    raise UserError(
        f"{response.request.method} {_public(str(response.url))}: HTTP {response.status_code} "
        f"{response.reason_phrase}{detail}"
    )


def _read_range(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read(length)


class GhaCacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> GhaCacheStore:
        what = f"cache backend {self.ctx.name}"
        for key in attrs:
            if key not in OPTIONS:
                raise UnknownOptionError(what, key, OPTIONS)
        endpoint = resolve_endpoint(attrs, os.environ, what)
        url = endpoint.url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{what}: {endpoint.key}= must be an http(s) URL (got {_public(url)!r})"
            )
        # BuildKit v0.11 appends "_apis/..." to the URL as given, master adds the "/": both work.
        base = url if url.endswith("/") else url + "/"
        token = attrs.get("token") or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ConfigError(f"{what}: token= is required (or set ${TOKEN_ENV})")
        scopes = parse_token(token, what)
        scope = attrs.get("scope") or "buildkit"
        if "," in scope:
            raise ConfigError(f"{what}: scope={scope!r} may not hold a comma")
        timeout = parse_duration(attrs.get("timeout") or "10m", f"{what}: timeout=")
        if direction == "export" and not any(s.writable for s in scopes):
            granted = ", ".join(f"{s.scope} ({s.permission})" for s in scopes) or "none"
            raise ConfigError(
                f"{what}: the token may write to no cache scope (granted: {granted}); "
                "an export needs the token of a job that may save caches"
            )
        return GhaCacheStore(
            base,
            scope,
            token,
            scopes,
            timeout=timeout,
            export=direction == "export",
            protocol=endpoint.protocol,
        )
