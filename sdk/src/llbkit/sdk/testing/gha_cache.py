"""A GitHub Actions cache service on loopback (the v1 REST protocol, as BuildKit's client,
go-actions-cache, speaks it), for the gha cache backend's tests.

What a client may rely on is kept: a bearer JWT whose ``ac``/``exp``/``nbf`` claims are checked
(401 otherwise), entries per scope (written under the token's last writable scope, looked up in
all its readable ones), prefix lookup filtered by version with the newest match winning,
reserve/patch/commit with 409 on a taken key and 400 when the committed size is not what was
uploaded, and downloads from an unauthenticated archive URL that honour ``Range``.
``throttle_every`` answers every n-th request with 429, as the real service does under load.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["GhaCacheService", "make_gha_token"]

API = "/_apis/artifactcache/"
ARTIFACTS = "/_artifacts/"


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


@dataclass
class GhaCacheService:
    """Serve on ``127.0.0.1``; use as a context manager. ``url`` ends in ``/`` as
    ``ACTIONS_CACHE_URL`` does.

    :param throttle_every: when set, every n-th request gets a 429.
    """

    throttle_every: int = 0
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
        found = [e for e in self.entries.values() if e.committed and e.key == key]
        if not found:
            raise KeyError(key)
        return bytes(max(found, key=lambda e: e.committed).data)

    def _lookup(self, keys: list[str], version: str, readable: set[str]) -> _Entry | None:
        candidates = sorted(
            (
                e
                for e in self.entries.values()
                if e.committed and e.version == version and e.scope in readable
            ),
            key=lambda e: -e.committed,
        )
        for entry in candidates:  # the first key exactly
            if keys and entry.key == keys[0]:
                return entry
        for key in keys:  # then each key as a prefix, newest first
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
                scopes = self._admitted()
                if scopes is None:
                    return
                parts = urlsplit(self.path)
                if parts.path.startswith(ARTIFACTS):
                    self._download(parts.path.removeprefix(ARTIFACTS))
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
                self._answer(
                    200,
                    {
                        "cacheKey": entry.key,
                        "scope": entry.scope,
                        "archiveLocation": f"{service.url}_artifacts/{entry.id}?sig=test",
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
