"""A GitHub Actions cache service on loopback for the gha cache backend's tests, in either protocol
BuildKit's client, go-actions-cache, speaks: v1 REST, or v2 Twirp with the bytes in Azurite.

What a client may rely on is kept: a bearer JWT whose ``ac``/``exp``/``nbf`` claims are checked
(401 otherwise), entries per scope (written under the token's last writable scope, looked up in
all its readable ones), prefix lookup filtered by version with the newest match winning,
reserve/upload/commit with 409 on a taken key and 400 when the committed size is not what was
uploaded. v1 serves downloads from an unauthenticated archive URL that honours ``Range``; v2
(``GhaCacheService(v2=azurite)``) hands out Azure SAS URLs of blobs in a container of a running
:class:`~llbkit.sdk.testing.azurite.Azurite`, so the data path is Blob Storage's own.
``throttle_every`` answers every n-th request with 429, as the real service does under load.

Behind a :class:`~llbkit.sdk.testing.FaultProxy` (``behind_proxy=True``), the URLs it hands out
name the host each request was sent to, so the bytes go through the proxy too: the proxy routes
``/<account>/`` to Azurite (:attr:`GhaCacheService.proxy_routes`). A SAS signature does not
cover the host, and a path-style URL keeps the account in its path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

if TYPE_CHECKING:
    from llbkit.sdk.testing.azurite import Azurite
    from llbkit.sdk.testing.faults import Routes

__all__ = ["GhaCacheService", "account_sas", "blob_sas", "make_gha_token"]

API = "/_apis/artifactcache/"
ARTIFACTS = "/_artifacts/"
TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
#: the ``sv`` of the SAS URLs handed out (any version from 2020-12-06 signs the same fields)
SAS_VERSION = "2021-08-06"
#: the HTTP status Twirp gives each error code it answers with here
TWIRP_STATUS = {
    "already_exists": 409,
    "bad_route": 404,
    "failed_precondition": 412,
    "internal": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "not_found": 404,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "unauthenticated": 401,
}


def make_gha_token(
    scopes: Iterable[tuple[str, int]] = (("refs/heads/main", 3),),
    *,
    expires_in: float = 3600,
    valid_from: float = -60,
) -> str:
    """An unsigned JWT shaped like ``ACTIONS_RUNTIME_TOKEN``: ``ac`` (a JSON string of
    ``[{"Scope","Permission"}]``, bit 1 read, bit 2 write), ``exp`` and ``nbf`` relative to now."""
    now = time.time()
    claims = {
        "ac": json.dumps([{"Scope": s, "Permission": p} for s, p in scopes]),
        "exp": int(now + expires_in),
        "nbf": int(now + valid_from),
        "iss": "llbkit-test",
    }

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(b'unsigned')}"


def _sas_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sign(key: str, text: str) -> str:
    mac = hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def blob_sas(
    account: str,
    key: str,
    container: str,
    blob: str,
    *,
    permissions: str,
    expiry: datetime,
    version: str = SAS_VERSION,
) -> str:
    """The query of a service SAS for one blob (``sr=b``), signed with the account key as
    Azure Storage checks it (versions 2020-12-06 on): no SDK needed to hand out signed URLs."""
    expires = _sas_time(expiry)
    # sp, st, se, resource, si, sip, spr, sv, sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct
    fields = [permissions, "", expires, f"/blob/{account}/{container}/{blob}", "", "", ""]
    fields += [version, "b", "", "", "", "", "", "", ""]
    signature = _sign(key, "\n".join(fields))
    return urlencode({"sv": version, "sr": "b", "sp": permissions, "se": expires, "sig": signature})


def account_sas(
    account: str, key: str, permissions: str, expiry: datetime, *, version: str = SAS_VERSION
) -> str:
    """The query of an account SAS for containers of the blob service (``ss=b&srt=c``): what
    creating and deleting a container takes, which a service SAS cannot do."""
    expires = _sas_time(expiry)
    # account, sp, ss, srt, st, se, sip, spr, sv, ses, and a last newline
    fields = [account, permissions, "b", "c", "", expires, "", "", version, "", ""]
    signature = _sign(key, "\n".join(fields))
    return urlencode(
        {"sv": version, "ss": "b", "srt": "c", "sp": permissions, "se": expires, "sig": signature}
    )


def _scopes(authorization: str | None) -> list[tuple[str, int]] | None:
    """The token's scopes, or ``None`` for a missing, malformed, expired or early token."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    parts = authorization.removeprefix("Bearer ").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        now = time.time()
        if not claims["nbf"] <= now < claims["exp"]:
            return None
        return [(e["Scope"], int(e["Permission"])) for e in json.loads(claims["ac"])]
    except (binascii.Error, ValueError, KeyError, TypeError):  # a malformed token is refused
        return None


@dataclass
class _Entry:
    id: int
    key: str
    version: str
    scope: str
    data: bytearray = field(default_factory=bytearray)
    spans: dict[int, int] = field(default_factory=dict)  # start -> length, as uploaded

    @property
    def received(self) -> int:
        return sum(self.spans.values())

    committed: int = 0  # the commit's sequence number: the newest wins a lookup
    blob: str = ""  # v2: the entry's blob in the Azurite container


@dataclass
class GhaCacheService:
    """Serve on ``127.0.0.1``; use as a context manager. ``url`` ends in ``/`` as
    ``ACTIONS_CACHE_URL`` and ``ACTIONS_RESULTS_URL`` do.

    :param throttle_every: when set, every n-th request gets a 429.
    :param v2: a running Azurite: serve the v2 (Twirp) protocol, the bytes in a container of
        its own there, instead of v1.
    :param sas_ttl: how long (seconds) a v2 signed URL is valid.
    :param expire_downloads: the next this many v2 download URLs are handed out expired, as
        an URL that outlived its SAS is (Azure then answers 403).
    :param behind_proxy: hand out URLs (v1 archive URLs, v2 SAS URLs, path-style) on the host
        each request was sent to rather than the service's and Azurite's own: several
        :class:`~llbkit.sdk.testing.FaultProxy` in front of one service each get their own.

    The URL of an entry's bytes ends in its key (v1 ``/_artifacts/<id>/<key>``, v2 a blob
    ``entry-<id>-<key>``), so a proxy can tell blobs (``buildkit-blob-``) from an index.
    """

    throttle_every: int = 0
    v2: Azurite | None = None
    sas_ttl: float = 600
    expire_downloads: int = 0
    behind_proxy: bool = False
    container: str = ""
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    entries: dict[int, _Entry] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _count: int = 0
    _sequence: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def proxy_routes(self) -> Routes:
        """What a :class:`~llbkit.sdk.testing.FaultProxy` in front of the service (with
        ``behind_proxy``) routes elsewhere: v2's signed URLs to Azurite, as Azure answers."""
        if self.v2 is None:
            return {}
        return {f"/{self.v2.account}/": (f"http://127.0.0.1:{self.v2.port}", "azure")}

    def keys(self, scope: str | None = None) -> list[str]:
        """Committed keys, oldest first (of one scope, or of all)."""
        done = [e for e in self.entries.values() if e.committed]
        return [
            e.key
            for e in sorted(done, key=lambda e: e.committed)
            if scope is None or e.scope == scope
        ]

    def content(self, key: str) -> bytes:
        """The committed bytes of ``key`` (the newest, when scopes share it)."""
        entry = self._committed(key)
        if self.v2 is None:
            return bytes(entry.data)
        import httpx

        response = httpx.get(self.signed_url(entry.blob, "r"), timeout=60)
        response.raise_for_status()
        return response.content

    def blob_url(self, key: str) -> str:
        """v2: a read-signed URL of ``key``'s blob in Azurite, to look at it with Azure's SDK."""
        return self.signed_url(self._committed(key).blob, "r")

    def _committed(self, key: str) -> _Entry:
        found = [e for e in self.entries.values() if e.committed and e.key == key]
        if not found:
            raise KeyError(key)
        return max(found, key=lambda e: e.committed)

    def signed_url(
        self, blob: str, permissions: str, expires_in: float | None = None, host: str = ""
    ) -> str:
        """v2: the SAS URL of ``blob`` in this service's container, as the real service hands
        out (``cw`` to upload, ``r`` to download); on ``host`` (path-style) when given."""
        assert self.v2 is not None, "signed URLs are the v2 protocol's"
        expiry = datetime.now(UTC) + timedelta(
            seconds=self.sas_ttl if expires_in is None else expires_in
        )
        query = blob_sas(
            self.v2.account,
            self.v2.key,
            self.container,
            blob,
            permissions=permissions,
            expiry=expiry,
        )
        account = f"http://{host}/{self.v2.account}" if host else self.v2.url
        return f"{account}/{self.container}/{blob}?{query}"

    def _container(self, method: str) -> None:
        """Create (``PUT``) or delete (``DELETE``) this service's Azurite container."""
        import httpx

        assert self.v2 is not None
        expiry = datetime.now(UTC) + timedelta(minutes=10)
        query = account_sas(self.v2.account, self.v2.key, "wdc", expiry)
        response = httpx.request(
            method,
            f"{self.v2.url}/{self.container}?restype=container&{query}",
            headers={"x-ms-version": SAS_VERSION},
            timeout=30,
        )
        if method == "PUT":
            response.raise_for_status()

    def _stored_size(self, blob: str) -> int | None:
        """The size of a committed blob in Azurite, ``None`` when there is none."""
        import httpx

        response = httpx.head(self.signed_url(blob, "r"), timeout=30)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return int(response.headers["Content-Length"])

    def _lookup(self, keys: list[str], version: str, readable: set[str]) -> _Entry | None:
        """v1: the first key exactly, then every key as a prefix."""
        return self._find(keys[0] if keys else None, keys, version, readable)

    def _find(
        self, exact: str | None, prefixes: list[str], version: str, readable: set[str]
    ) -> _Entry | None:
        candidates = sorted(
            (
                e
                for e in self.entries.values()
                if e.committed and e.version == version and e.scope in readable
            ),
            key=lambda e: -e.committed,
        )
        for entry in candidates:  # the exact key first
            if exact is not None and entry.key == exact:
                return entry
        for key in prefixes:  # then each key as a prefix, newest first
            for entry in candidates:
                if entry.key.startswith(key):
                    return entry
        return None

    def __enter__(self) -> GhaCacheService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _answer(
                self, code: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
                data = body if isinstance(body, bytes) else b""
                if body is not None and not isinstance(body, bytes):
                    data = json.dumps(body).encode()
                service.requests.append((self.command, self.path, code))
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if body is not None and not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _host(self) -> str:
                """Where the URLs handed out point: the host asked, behind a proxy."""
                return (self.headers.get("Host") or "") if service.behind_proxy else ""

            def _error(self, code: int, message: str, type_key: str = "") -> None:
                self._answer(code, {"message": message, "typeKey": type_key, "errorCode": 0})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _admitted(self) -> list[tuple[str, int]] | None:
                """The caller's scopes, or ``None`` once the request has been answered."""
                with service._lock:
                    service._count += 1
                    throttled = service.throttle_every and (
                        service._count % service.throttle_every == 0
                    )
                if throttled:
                    self._error(429, "Too Many Requests")
                    return None
                path = urlsplit(self.path).path
                if path.startswith(ARTIFACTS):
                    return []  # a signed URL: anyone holding it may read
                scopes = _scopes(self.headers.get("Authorization"))
                if scopes is None:
                    self._error(401, "Bearer token missing, malformed or expired")
                    return None
                if "api-version=6.0-preview.1" not in (self.headers.get("Accept") or ""):
                    self._error(400, "Accept must name api-version=6.0-preview.1")
                    return None
                return scopes

            def do_GET(self) -> None:
                if service.v2 is not None:
                    self._twirp_error("bad_route", f"GET {self.path}: only POST is served")
                    return
                scopes = self._admitted()
                if scopes is None:
                    return
                parts = urlsplit(self.path)
                if parts.path.startswith(ARTIFACTS):  # /_artifacts/<id>/<key>
                    self._download(parts.path.removeprefix(ARTIFACTS).split("/")[0])
                    return
                if parts.path != API + "cache":
                    self._error(404, "no such endpoint")
                    return
                query = parse_qs(parts.query)
                keys = [k for k in query.get("keys", [""])[0].split(",") if k]
                version = query.get("version", [""])[0]
                if not keys or not version:
                    self._error(400, "keys and version are required")
                    return
                with service._lock:
                    readable = {s for s, p in scopes if p & 1}
                    entry = service._lookup(keys, version, readable)
                if entry is None:
                    self._answer(204)
                    return
                base = f"http://{self._host()}/" if self._host() else service.url
                where = f"{base}_artifacts/{entry.id}/{quote(entry.key, safe=':')}"
                self._answer(
                    200,
                    {
                        "cacheKey": entry.key,
                        "scope": entry.scope,
                        "archiveLocation": f"{where}?sig=test",
                    },
                )

            def _download(self, name: str) -> None:
                if self.headers.get("Authorization"):
                    self._error(400, "a signed URL takes no Authorization header")
                    return
                with service._lock:
                    entry = service.entries.get(int(name)) if name.isdigit() else None
                if entry is None or not entry.committed:
                    self._error(404, "BlobNotFound")
                    return
                data = bytes(entry.data)
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if not wanted:
                    self._answer(200, data)
                    return
                start = int(wanted.group(1))
                end = min(int(wanted.group(2) or len(data) - 1), len(data) - 1)
                if start >= len(data) or start > end:
                    self._answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                self._answer(
                    206,
                    data[start : end + 1],
                    {"Content-Range": f"bytes {start}-{end}/{len(data)}"},
                )

            def do_POST(self) -> None:
                body = self._body()
                if service.v2 is not None:
                    self._twirp(body)
                    return
                scopes = self._admitted()
                if scopes is None:
                    return
                path = urlsplit(self.path).path
                writable = [s for s, p in scopes if p & 2]
                if not writable:
                    self._error(403, "the token may not write to any scope")
                    return
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    self._error(400, "the body is not JSON")
                    return
                if path == API + "caches":
                    self._reserve(request, writable[-1])
                elif path.startswith(API + "caches/"):
                    self._commit(path.removeprefix(API + "caches/"), request, writable[-1])
                else:
                    self._error(404, "no such endpoint")

            def _reserve(self, request: Any, scope: str) -> None:
                key, version = request.get("key"), request.get("version")
                if not isinstance(key, str) or not key or not isinstance(version, str):
                    self._error(400, "key and version are required")
                    return
                with service._lock:
                    taken = any(
                        e.key == key and e.version == version and e.scope == scope
                        for e in service.entries.values()
                    )
                    if not taken:
                        cache_id = len(service.entries) + 1
                        service.entries[cache_id] = _Entry(cache_id, key, version, scope)
                if taken:
                    self._error(
                        409,
                        f"Cache already exists. Scope: {scope}, Key: {key}, Version: {version}",
                        "ArtifactCacheItemAlreadyExistsException",
                    )
                    return
                self._answer(201, {"cacheId": cache_id})

            def _entry(self, name: str, scope: str) -> _Entry | None:
                entry = service.entries.get(int(name)) if name.isdigit() else None
                if entry is None or entry.scope != scope:
                    self._error(404, f"no reserved cache {name}")
                    return None
                if entry.committed:
                    self._error(400, f"cache {name} is already committed")
                    return None
                return entry

            def _commit(self, name: str, request: Any, scope: str) -> None:
                with service._lock:
                    entry = self._entry(name, scope)
                    if entry is None:
                        return
                    size = request.get("size")
                    if size != len(entry.data) or size != entry.received:
                        self._error(
                            400, f"size {size} does not match the {entry.received} bytes uploaded"
                        )
                        return
                    service._sequence += 1
                    entry.committed = service._sequence
                self._answer(204)

            def do_PATCH(self) -> None:
                body = self._body()
                if service.v2 is not None:
                    self._twirp_error("bad_route", f"PATCH {self.path}: only POST is served")
                    return
                scopes = self._admitted()
                if scopes is None:
                    return
                path = urlsplit(self.path).path
                writable = [s for s, p in scopes if p & 2]
                if not path.startswith(API + "caches/") or not writable:
                    self._error(404 if writable else 403, "no such endpoint or no write scope")
                    return
                span = re.fullmatch(
                    r"bytes (\d+)-(\d+)/\*", self.headers.get("Content-Range") or ""
                )
                if not span or int(span.group(2)) - int(span.group(1)) + 1 != len(body):
                    self._error(400, "Content-Range must be bytes S-E/* and match the body")
                    return
                with service._lock:
                    entry = self._entry(path.removeprefix(API + "caches/"), writable[-1])
                    if entry is None:
                        return
                    start = int(span.group(1))
                    if len(entry.data) < start + len(body):
                        entry.data.extend(bytes(start + len(body) - len(entry.data)))
                    entry.data[start : start + len(body)] = body  # chunks may come out of order
                    entry.spans[start] = len(body)
                self._answer(204)

            # The v2 protocol: Twirp calls with JSON bodies; the bytes go to Azurite.

            def _twirp_error(self, code: str, message: str) -> None:
                self._answer(TWIRP_STATUS[code], {"code": code, "msg": message})

            def _twirp(self, body: bytes) -> None:
                with service._lock:
                    service._count += 1
                    throttled = service.throttle_every and (
                        service._count % service.throttle_every == 0
                    )
                if throttled:
                    self._twirp_error("resource_exhausted", "Too Many Requests")
                    return
                path = urlsplit(self.path).path
                calls: dict[str, Callable[[dict[str, Any], list[tuple[str, int]]], None]] = {
                    "CreateCacheEntry": self._create,
                    "FinalizeCacheEntryUpload": self._finalize,
                    "GetCacheEntryDownloadURL": self._download_url,
                }
                call = calls.get(path.removeprefix(TWIRP)) if path.startswith(TWIRP) else None
                if call is None:
                    self._twirp_error("bad_route", f"no handler for path {path}")
                    return
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if kind != "application/json":
                    self._twirp_error("bad_route", f"unexpected Content-Type: {kind!r}")
                    return
                scopes = _scopes(self.headers.get("Authorization"))
                if scopes is None:
                    self._twirp_error(
                        "unauthenticated", "Bearer token missing, malformed or expired"
                    )
                    return
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    request = None
                if not isinstance(request, dict):
                    self._twirp_error("malformed", "the body is not a JSON object")
                    return
                try:
                    call(request, scopes)
                except Exception as err:  # Azurite failing under the fake: the service's fault
                    # Named by type only: httpx's messages carry the URL, signature and all.
                    self._twirp_error("internal", f"the blob store failed ({type(err).__name__})")

            def _key_version(self, request: dict[str, Any]) -> tuple[str, str] | None:
                key, version = request.get("key"), request.get("version")
                if (
                    not key
                    or not version
                    or not isinstance(key, str)
                    or not isinstance(version, str)
                ):
                    self._twirp_error("invalid_argument", "key and version are required")
                    return None
                return key, version

            def _writable(self, scopes: list[tuple[str, int]]) -> str | None:
                writable = [s for s, p in scopes if p & 2]
                if not writable:
                    self._twirp_error("permission_denied", "the token may not write any scope")
                    return None
                return writable[-1]

            def _create(self, request: dict[str, Any], scopes: list[tuple[str, int]]) -> None:
                scope = self._writable(scopes)
                wanted = self._key_version(request) if scope is not None else None
                if scope is None or wanted is None:
                    return
                key, version = wanted
                with service._lock:
                    taken = any(
                        e.key == key and e.version == version and e.scope == scope
                        for e in service.entries.values()
                    )
                    if not taken:
                        entry_id = len(service.entries) + 1
                        # The key, in characters a blob name takes as it is, for proxies.
                        blob = f"entry-{entry_id}-{re.sub(r'[^A-Za-z0-9._:-]', '-', key)}"
                        service.entries[entry_id] = _Entry(entry_id, key, version, scope, blob=blob)
                if taken:
                    self._twirp_error(
                        "already_exists",
                        "cache entry with the same key, version, and scope already exists",
                    )
                    return
                upload = service.signed_url(blob, "cw", host=self._host())
                self._answer(200, {"ok": True, "signed_upload_url": upload})

            def _finalize(self, request: dict[str, Any], scopes: list[tuple[str, int]]) -> None:
                scope = self._writable(scopes)
                wanted = self._key_version(request) if scope is not None else None
                if scope is None or wanted is None:
                    return
                key, version = wanted
                size = request.get("size_bytes")
                if isinstance(size, str) and size.isdigit():
                    size = int(size)  # protojson writes an int64 as a string
                if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                    self._twirp_error("invalid_argument", "size_bytes must be a byte count")
                    return
                with service._lock:
                    entry = next(
                        (
                            e
                            for e in service.entries.values()
                            if e.key == key and e.version == version and e.scope == scope
                        ),
                        None,
                    )
                if entry is None:
                    self._twirp_error("not_found", f"no cache entry {key} was created")
                    return
                if entry.committed:
                    self._twirp_error("failed_precondition", f"{key} is already finalized")
                    return
                stored = service._stored_size(entry.blob)
                if stored is None:
                    self._twirp_error("invalid_argument", f"nothing was uploaded for {key}")
                    return
                if stored != size:
                    self._twirp_error(
                        "invalid_argument",
                        f"size_bytes {size} does not match the {stored} bytes uploaded",
                    )
                    return
                with service._lock:
                    if not entry.committed:
                        service._sequence += 1
                        entry.committed = service._sequence
                self._answer(200, {"ok": True, "entry_id": str(entry.id)})

            def _download_url(self, request: dict[str, Any], scopes: list[tuple[str, int]]) -> None:
                wanted = self._key_version(request)
                if wanted is None:
                    return
                key, version = wanted
                restore = request.get("restore_keys") or []
                if not isinstance(restore, list) or not all(isinstance(k, str) for k in restore):
                    self._twirp_error("invalid_argument", "restore_keys must be strings")
                    return
                with service._lock:
                    readable = {s for s, p in scopes if p & 1}
                    entry = service._find(key, restore, version, readable)
                    expired = entry is not None and service.expire_downloads > 0
                    if expired:
                        service.expire_downloads -= 1
                if entry is None:
                    self._answer(200, {"ok": False})
                    return
                url = service.signed_url(
                    entry.blob, "r", -60 if expired else None, host=self._host()
                )
                self._answer(
                    200, {"ok": True, "signed_download_url": url, "matched_key": entry.key}
                )

        if self.v2 is not None:
            self.container = self.container or f"gha-cache-{uuid.uuid4().hex[:12]}"
            self._container("PUT")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.v2 is not None and self.container:
            import httpx

            # Azurite keeps blobs in memory for its whole session; gone already is fine too.
            with contextlib.suppress(httpx.HTTPError):
                self._container("DELETE")
