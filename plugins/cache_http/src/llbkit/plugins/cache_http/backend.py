"""``type=http``: the build cache on any server that answers ``GET``, ``PUT`` and ``HEAD``.

Blobs at ``<url>/blobs/<digest>``, the cache config (BuildKit's, its layers described inside,
as s3 and gha keep it) at ``<url>/manifests/<name>``: an object store behind a reverse proxy, an
artifact server or a plain WebDAV share is a cache. It is also the smallest real backend, which
``docs/cache-backends.md`` walks through.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from llbkit.core.errors import ConfigError, UserError, check_options
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.blobcheck import checked_digest, verified_spool
from llbkit.core.plugins.cache_backend import Direction, IndexFormat, TransientCacheError
from llbkit.core.plugins.context import BlobSource, ClientIO
from llbkit.core.units import parse_duration

if TYPE_CHECKING:
    import httpx

#: ``url`` is where the cache lives; ``name`` (``;`` between several: an export writes each,
#: an import reads the first there) names its index; ``token`` a bearer token; ``timeout`` how
#: long a connection or a read may wait
OPTIONS = ("url", "name", "token", "timeout")
#: read when ``token=`` is not given, so a CI secret stays out of the command line
TOKEN_ENV = "LLBKIT_CACHE_HTTP_TOKEN"
_NAME = re.compile(r"[A-Za-z0-9._-]+")
CHUNK = 1 << 20


def _public(url: str) -> str:
    """``url`` as messages may show it: no user, password or query (signatures)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class HttpCacheStore:
    """One opened cache: a base URL, its index names, one connection pool."""

    def __init__(
        self, base: str, names: list[str], token: str, timeout: float, writable: bool
    ) -> None:
        import httpx

        self.base = base.rstrip("/")
        self.names = names
        self.writable = writable
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout)

    @property
    def name(self) -> str:
        return f"http {_public(self.base)}"

    @property
    def index_format(self) -> IndexFormat:
        return "config"  # BuildKit's config with its layers described: no manifest to keep

    def _url(self, kind: str, what: str) -> str:
        # A query (a signed URL's) stays after the path it signs.
        parts = urlsplit(self.base)
        path = f"{parts.path.rstrip('/')}/{kind}/{what}"
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    async def _send(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """One request; a 5xx, a 429 or a timeout is transient (core tries again)."""
        import httpx

        try:
            response = await self._http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            raise TransientCacheError(f"{method} {_public(url)}: {self._late()}") from None
        except httpx.HTTPError as err:
            raise TransientCacheError(f"{method} {_public(url)}: {_what(err)}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientCacheError(
                f"{method} {_public(url)}: HTTP {response.status_code}",
                throttled=response.status_code == 429,
            )
        if response.status_code in (401, 403):
            raise UserError(f"{method} {_public(url)}: access denied (HTTP {response.status_code})")
        return response

    def _late(self) -> str:
        return f"no answer within {self.timeout:g}s (timeout=)"

    def _check_writable(self) -> None:
        if not self.writable:
            raise PermissionError(f"cache {self.name} was opened for import only")

    async def read_index(self) -> bytes | None:
        for name in self.names:
            response = await self._send("GET", self._url("manifests", name))
            if response.status_code == 404:
                continue
            _expect(response, "GET")
            return response.content
        return None

    async def write_index(self, data: bytes) -> None:
        self._check_writable()
        for name in self.names:
            response = await self._send("PUT", self._url("manifests", name), content=data)
            _expect(response, "PUT")

    async def has_blob(self, digest: str) -> bool:
        response = await self._send("HEAD", self._url("blobs", checked_digest(digest)))
        if response.status_code == 404:
            return False
        _expect(response, "HEAD")
        return True

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        import httpx

        url = self._url("blobs", checked_digest(digest))
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code == 404:
                    raise KeyError(digest)
                if response.status_code >= 500 or response.status_code == 429:
                    raise TransientCacheError(
                        f"GET {_public(url)}: HTTP {response.status_code}",
                        throttled=response.status_code == 429,
                    )
                _expect(response, "GET")
                async for chunk in response.aiter_bytes(CHUNK):
                    yield chunk
        except httpx.TimeoutException:
            raise TransientCacheError(f"GET {_public(url)}: {self._late()}") from None
        except httpx.HTTPError as err:  # a cut connection: the whole blob again
            raise TransientCacheError(f"GET {_public(url)}: {_what(err)}") from None

    async def write_blob(self, digest: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        self._check_writable()
        url = self._url("blobs", checked_digest(digest))
        # Checked before a byte is sent: a server never holds a blob under a wrong digest.
        async with verified_spool(digest, size, chunks) as spool:
            response = await self._send(
                "PUT",
                url,
                content=_file_chunks(spool),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
            _expect(response, "PUT")

    def blob_source(self) -> BlobSource | None:
        return None  # not a registry: nothing for a push to mount

    async def aclose(self) -> None:
        await self._http.aclose()


def _what(err: BaseException) -> str:
    """An error's words, or its kind when it has none (httpx's timeouts have none)."""
    return str(err) or type(err).__name__


def _expect(response: httpx.Response, method: str) -> None:
    if not 200 <= response.status_code < 300:
        raise UserError(
            f"{method} {_public(str(response.url))}: HTTP {response.status_code} "
            f"{response.reason_phrase}"
        )


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(CHUNK):
            yield chunk


class HttpCacheBackend:
    """Constructed once per engine; ``resolve`` runs once per ``--export/--import-cache``."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> HttpCacheStore:
        what = f"cache backend {self.ctx.name}"
        check_options(what, attrs, OPTIONS)
        url = attrs.get("url", "")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"{what}: url= must be an http(s) URL (got {_public(url)!r})")
        names = [n for n in (attrs.get("name") or "buildkit").split(";") if n]
        for name in names:
            if not _NAME.fullmatch(name):
                raise ConfigError(f"{what}: name={name!r} may hold letters, digits, . _ - only")
        try:  # seconds, or a duration as gha's timeout= takes it (30s, 5m)
            timeout = parse_duration(attrs.get("timeout") or "60", what)
        except ConfigError:
            timeout = 0
        if timeout <= 0:
            raise ConfigError(
                f"{what}: timeout={attrs['timeout']!r} is not a duration (such as 60, 30s or 5m)"
            ) from None
        token = attrs.get("token") or os.environ.get(TOKEN_ENV, "")
        return HttpCacheStore(url, names, token, timeout, writable=direction == "export")
