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

from llbkit.core.errors import ConfigError, UserError, check_options
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
#: a call to the service's API that failed without a stall (a 5xx, a 429, a cut connection) is
#: made this many times in all before core hears of it: a write is several calls (reserve,
#: upload, commit), every write's on the same few URLs, and core's tries are for a whole write
API_ATTEMPTS = 3
API_DELAY = 0.1
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


class _TimedOut(TransientCacheError):
    """A request that waited ``timeout`` for its answer in vain: core's to try again, not
    :meth:`GhaCacheStore._send`'s."""


class _Taken(UserError):
    """The service's "already exists": the key is reserved or written (Go's ``os.ErrExist``)."""


@dataclass
class _Held:
    """A key this store reserved and has not committed yet. Only its reserver can finish it (a
    second reservation finds it taken), so a write tried again after a failure picks it up
    here: the parts already sent are not sent again, the commit is asked for once more."""

    #: what it holds: ``<size>:<sha256>`` of the bytes it was reserved for
    content: str
    #: v1: the entry's ``caches/<id>`` URL; v2: its signed upload URL
    target: str
    #: the offsets of the chunks (v1) or blocks (v2) the service or the blob store has
    sent: set[int]
    #: v2: the blob is whole in the blob store (put, or its block list committed)
    uploaded: bool = False


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
        self.timeout = timeout
        self._held: dict[str, _Held] = {}
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
        """A call to the service's API; a 5xx, a 429 or a timeout is transient (core tries
        again). One that did not stall (waited ``timeout`` already) is made again here first."""
        for attempt in range(1, API_ATTEMPTS + 1):
            try:
                return await self._request(method, url, client, **kwargs)
            except TransientCacheError as err:
                if attempt == API_ATTEMPTS or isinstance(err, _TimedOut):
                    raise
            await anyio.sleep(API_DELAY * attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _request(
        self, method: str, url: str, client: httpx.AsyncClient | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; a 5xx, a 429, a cut connection or a timeout is transient."""
        import httpx

        what = f"{method} {_public(url)}"
        try:
            response = await (client or self._http).request(method, url, **kwargs)
        except httpx.HTTPError as err:
            raise self._failed(what, err, url) from None
        _check_transient(response, what)
        if response.status_code in (401, 403):
            _denied(what, response.status_code)
        return response

    def _failed(self, what: str, error: Exception, url: str) -> TransientCacheError:
        """A request that got no (whole) answer, said without a signature."""
        import httpx

        if isinstance(error, httpx.TimeoutException):
            return _TimedOut(f"{what}: no answer within {self.timeout:g}s (timeout=)")
        return TransientCacheError(f"{what}: {_scrubbed(error, url)}")

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

        # Tried again after a failure, the newest is the same: the number this store reserved
        # for the same bytes comes first, and is picked up where it was left.
        content = f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
        for number in range(taken + 1, taken + 1 + MAX_INDEX_TRIES):
            if await self._save(f"{key}#{number}", len(data), read, content):
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
                raise self._failed(what, err, url) from None
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

            content = f"{size}:{digest.removeprefix('sha256:')}"
            if not await self._save(key, size, read, content) and not await self.has_blob(digest):
                # Taken but not committed: an export still writing it, or one that died (or
                # this one, when the answer to its reservation was lost). Naming it in the
                # index would name a blob that is not there.
                raise UserError(
                    f"cache {self.name}: blob {digest} is reserved by an export that has not "
                    "finished it; export again later"
                )

    async def _save(
        self, key: str, size: int, read: Callable[[int, int], Awaitable[bytes]], content: str
    ) -> bool:
        """Reserve ``key`` (or take up the reservation this store holds), upload, commit;
        ``False`` when the key is already taken. A failure once reserved is transient like any
        other: the write tried again picks up here where this one stopped."""
        held = self._held.get(key)
        if held is not None and held.content != content:  # held for other bytes: not these
            del self._held[key]
            held = None
        if held is None:
            target = await (self._reserve_v2(key) if self.protocol == 2 else self._reserve(key))
            if target is None:
                return False
            held = self._held[key] = _Held(content, target, set())
        if self.protocol == 2:
            await self._upload(held, size, read)
            commit = partial(self._finalize, key, size)
        else:
            await self._fill(held, size, read)
            commit = partial(self._ok, "POST", held.target, json={"size": size})
        try:
            await commit()
        except TransientCacheError:
            raise
        except UserError:
            # Refused: a commit that went through before its answer was lost (a timeout, a cut
            # connection) is refused the second time. The reservation is this store's.
            if not await self._committed(key):
                raise
        del self._held[key]
        return True

    async def _committed(self, key: str) -> bool:
        found = await self._lookup(key)
        return found is not None and found.key == key

    async def _reserve(self, key: str) -> str | None:
        """A v1 reservation: the entry's URL, ``None`` when the key is taken."""
        response = await self._send(
            "POST", self.api + "caches", json={"key": key, "version": VERSION}
        )
        if _already_exists(response):
            return None
        _expect(response)
        body = response.json() if response.content else {}
        # Go decodes JSON case-insensitively: the service may say cacheId or cacheID.
        found = {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
        cache_id = int(found.get("cacheid") or 0)
        if not cache_id:
            raise UserError(f"POST {_public(self.api)}caches: no cacheId for {key}")
        return f"{self.api}caches/{cache_id}"

    async def _fill(
        self, held: _Held, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> None:
        """Upload a reserved v1 entry's bytes in chunks, several at once: those it lacks."""

        async def upload(start: int) -> None:
            data = await read(start, min(CHUNK, size - start))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{start + len(data) - 1}/*",
            }
            # The data path: one request, tried again by core with the whole write.
            _expect(await self._request("PATCH", held.target, content=data, headers=headers))
            held.sent.add(start)

        await _in_parallel([s for s in range(0, size, CHUNK) if s not in held.sent], upload)

    async def _ok(self, method: str, url: str, **kwargs: Any) -> None:
        _expect(await self._send(method, url, **kwargs))

    async def _reserve_v2(self, key: str) -> str | None:
        """A v2 reservation: the signed URL to upload to, ``None`` when the key is taken."""
        what = f"POST {_public(self.api)}CreateCacheEntry"
        try:
            reply = await self._twirp("CreateCacheEntry", {"key": key, "version": VERSION})
        except _Taken:
            return None
        url = reply.get("signed_upload_url")
        if not reply.get("ok") or not url or not isinstance(url, str):
            raise UserError(f"{what}: the service reserved {key} without an upload URL")
        if urlsplit(url).scheme not in ("http", "https"):
            raise UserError(f"{what}: the upload URL for {key} is not an http(s) URL")
        return url

    async def _upload(
        self, held: _Held, size: int, read: Callable[[int, int], Awaitable[bytes]]
    ) -> None:
        """The bytes to a signed Blob Storage URL as Azure takes them: one Put Blob when they
        fit a chunk, else blocks (several at once, those not staged yet) and the block list
        that commits them."""
        url = held.target
        if held.uploaded:
            return
        if size <= CHUNK:
            data = await read(0, size)
            await self._put(url, data, {"x-ms-blob-type": "BlockBlob"})
            held.uploaded = True
            return
        starts = list(range(0, size, CHUNK))
        # Azure wants every block id of a blob the same length before base64.
        ids = [base64.b64encode(f"llbkit-{n:08d}".encode()).decode() for n in range(len(starts))]

        async def stage(number: int) -> None:
            start = starts[number]
            data = await read(start, min(CHUNK, size - start))
            block = _with_query(url, {"comp": "block", "blockid": ids[number]})
            await self._put(block, data, {})
            held.sent.add(start)

        await _in_parallel([n for n, s in enumerate(starts) if s not in held.sent], stage)
        listing = "".join(f"<Latest>{block_id}</Latest>" for block_id in ids)
        body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'
        commit = _with_query(url, {"comp": "blocklist"})
        await self._put(commit, body.encode(), {"Content-Type": "application/xml"})
        held.uploaded = True

    async def _put(self, url: str, data: bytes, headers: Mapping[str, str]) -> None:
        """One write to a signed URL: never the token; a 5xx, 429 or timeout is transient."""
        import httpx

        what = f"PUT {_public(url)}"
        try:
            response = await self._signed.put(
                url, content=data, headers={"x-ms-version": AZURE_VERSION, **headers}
            )
        except httpx.HTTPError as err:
            raise self._failed(what, err, url) from None
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


async def _in_parallel(items: list[_T], work: Callable[[_T], Awaitable[None]]) -> None:
    """``work`` on every item, ``UPLOADERS`` at a time. A transient failure of one leaves the
    others going (what they send is kept for the write tried again); the first is raised
    once all are done. Any other failure is raised at once, alone."""
    pending = list(items)
    failed: list[TransientCacheError] = []

    async def worker() -> None:
        while pending:
            try:
                await work(pending.pop(0))
            except TransientCacheError as err:
                failed.append(err)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(min(UPLOADERS, len(pending))):
                group.start_soon(worker)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    if failed:
        raise failed[0]


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
        check_options(what, attrs, OPTIONS)
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
        if timeout <= 0:
            raise ConfigError(f"{what}: timeout={attrs['timeout']!r} is not a positive duration")
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
