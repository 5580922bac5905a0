"""``type=gha``: the build cache in the GitHub Actions cache service, as BuildKit keeps it.

The v1 REST protocol (``<url>_apis/artifactcache/``) as BuildKit's client, go-actions-cache,
speaks it. Entries are write-once: a blob is ``buildkit-blob-1-<digest>``, and the index (the
cache config, its layers described inside) is saved "mutably", each export adding
``<key>#<n+1>`` and a reader taking the newest ``<key>#…``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

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

OPTIONS = ("url", "token", "scope", "timeout")
URL_ENV = "ACTIONS_CACHE_URL"
TOKEN_ENV = "ACTIONS_RUNTIME_TOKEN"
#: go-actions-cache sends one constant version with every key
VERSION = hashlib.sha256(b"|go-actionscache-1.0").hexdigest()
ACCEPT = "application/json;api-version=6.0-preview.1"
USER_AGENT = "go-actions-cache/1.0"  # the service knows BuildKit's client by it
#: the "1" in BuildKit's key names: its cache layout version
LAYOUT = "1"
CHUNK = 32 << 20
UPLOADERS = 4
READ_CHUNK = 1 << 20
#: ``<key>#<n>`` taken by others before this export gets one: give up after so many
MAX_INDEX_TRIES = 50
#: once a key is reserved only its reserver can finish it, so its uploads are tried again here
UPLOAD_ATTEMPTS = 5


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


class GhaCacheStore:
    """One opened cache: the service, the index keys the token's scopes give, two clients
    (the API with the token, signed archive URLs without)."""

    def __init__(
        self,
        base: str,
        scope: str,
        token: str,
        scopes: list[Scope],
        *,
        timeout: float,
        export: bool,
    ) -> None:
        import httpx

        self.base = base
        self.api = base + "_apis/artifactcache/"
        self.scope = scope
        writable = [s.scope for s in scopes if s.writable]
        self.writable = export
        self.export_key = index_key(scope, writable[-1]) if export and writable else ""
        self.import_keys = list(
            dict.fromkeys(index_key(scope, s.scope) for s in scopes if s.readable)
        )
        headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "User-Agent": USER_AGENT}
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._downloads = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, timeout=timeout)

    @property
    def name(self) -> str:
        return f"gha {_public(self.base)} scope={self.scope}"

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
            raise TransientCacheError(f"{what}: {err}") from None
        _check_transient(response, what)
        if response.status_code in (401, 403):
            raise UserError(
                f"{what}: access denied (HTTP {response.status_code}); "
                f"is {TOKEN_ENV} the current job's?"
            )
        return response

    async def _lookup(self, key: str) -> dict[str, Any] | None:
        """The newest committed entry whose key starts with ``key`` (BuildKit's ``Load``)."""
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
        return entry

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def read_index(self) -> bytes | None:
        configs = []
        for key in self.import_keys:
            entry = await self._lookup(key + "#")
            if entry is None:
                continue
            try:
                chunks = [chunk async for chunk in self._archive(entry, key)]
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
                taken = int(str(newest["cacheKey"]).removeprefix(key + "#"))
            except ValueError:
                raise UserError(
                    f"cache {self.name}: invalid index key {newest['cacheKey']!r}"
                ) from None

        async def read(start: int, length: int) -> bytes:
            return data[start : start + length]

        for number in range(taken + 1, taken + 1 + MAX_INDEX_TRIES):
            if await self._save(f"{key}#{number}", len(data), read):
                return
        raise TransientCacheError(f"cache {self.name}: {key}#… kept being taken by other exports")

    async def has_blob(self, digest: str) -> bool:
        key = blob_key(checked_digest(digest))
        entry = await self._lookup(key)
        return entry is not None and entry["cacheKey"] == key

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        key = blob_key(checked_digest(digest))
        entry = await self._lookup(key)
        if entry is None or entry["cacheKey"] != key:
            raise KeyError(digest)
        async for chunk in self._archive(entry, digest):
            yield chunk

    async def _archive(self, entry: Mapping[str, Any], missing: str) -> AsyncIterator[bytes]:
        """An entry's bytes from its signed ``archiveLocation``: no token is sent there."""
        import httpx

        url = str(entry["archiveLocation"])
        what = f"GET {_public(url)}"
        try:
            async with self._downloads.stream("GET", url) as response:
                if response.status_code == 404:
                    raise KeyError(missing)
                _check_transient(response, what)
                if not 200 <= response.status_code < 300:
                    raise UserError(f"{what}: HTTP {response.status_code} {response.reason_phrase}")
                async for chunk in response.aiter_bytes(READ_CHUNK):
                    yield chunk
        except httpx.HTTPError as err:  # a cut connection or a timeout: the whole blob again
            raise TransientCacheError(f"{what}: {err}") from None

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
        """Upload a reserved entry's bytes in chunks, several at once, then commit it."""
        pending = list(range(0, size, CHUNK))

        async def uploader() -> None:
            while pending:
                start = pending.pop(0)
                data = await read(start, min(CHUNK, size - start))
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes {start}-{start + len(data) - 1}/*",
                }
                await _patient(partial(self._ok, "PATCH", url, content=data, headers=headers))

        try:
            async with anyio.create_task_group() as group:
                for _ in range(min(UPLOADERS, len(pending))):
                    group.start_soon(uploader)
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        await _patient(partial(self._ok, "POST", url, json={"size": size}))

    async def _ok(self, method: str, url: str, **kwargs: Any) -> None:
        _expect(await self._send(method, url, **kwargs))

    def blob_source(self) -> BlobSource | None:
        return None  # not a registry: nothing for a push to mount

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._downloads.aclose()


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


def _check_transient(response: httpx.Response, what: str) -> None:
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientCacheError(
            f"{what}: HTTP {response.status_code}", throttled=response.status_code == 429
        )


def _already_exists(response: httpx.Response) -> bool:
    """The service's "already exists" (BuildKit's client maps it to ``os.ErrExist``)."""
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
        url = attrs.get("url") or os.environ.get(URL_ENV, "")
        if not url:
            raise ConfigError(f"{what}: url= is required (or set ${URL_ENV})")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{what}: url= must be an http(s) URL (got {_public(url)!r})")
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
            base, scope, token, scopes, timeout=timeout, export=direction == "export"
        )
