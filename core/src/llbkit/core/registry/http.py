"""The HTTP/1.1 a registry client speaks: the requests of a pull and a push (GET, HEAD, POST,
PUT, PATCH), bodies streamed both ways, redirects, kept connections, TLS, and the proxy the
environment names.

httpx and httpcore took a cold build 35 ms to import and set up before its first request;
this needs only asyncio, which the engine already runs on. Its rules are Go's, which buildkitd's
resolver uses: at most 10 redirects, ``Authorization`` sent on a redirect only to the same host
or its subdomains, bodies asked for with ``gzip`` and decoded, the proxy the environment names
(:mod:`llbkit.core.registry.proxies`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from llbkit.core.registry.hosts import listed
from llbkit.core.registry.proxies import Proxy, ProxyError, proxy_for

__all__ = [
    "Broken",
    "Client",
    "HTTPError",
    "Headers",
    "Pool",
    "Response",
    "Timeout",
]

#: Go's limit, which buildkitd's resolver keeps
MAX_REDIRECTS = 10
#: how long an idle connection is kept: below the minute after which load balancers in front
#: of registries commonly drop one, so a kept connection is rarely one the server closed
KEEPALIVE = 30.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
#: the most one read of a body asks for (asyncio's transport reads 256 kB at a time)
_READ = 1 << 18


class HTTPError(Exception):
    """A request that got no whole answer: the connection could not be made, broke, or timed
    out, or what came back was not HTTP."""


class Broken(HTTPError):
    """The connection broke (closed, reset) before the answer was whole."""


class _Unanswered(Broken):
    """Broken before a byte of the answer came: on a kept connection, one the server closed
    while it was idle."""


class Timeout(HTTPError):
    """The server did not answer (connect, send or read) within the client's timeout."""


class ConnectTimeout(Timeout):
    pass


class ReadTimeout(Timeout):
    pass


class WriteTimeout(Timeout):
    pass


class Headers:
    """An answer's header fields, looked up without regard to case."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def get(self, name: str, default: str = "") -> str:
        """The first field named ``name``."""
        wanted = name.lower()
        return next((v for k, v in self._items if k.lower() == wanted), default)


class _Connection:
    """One socket, on the event loop that opened it."""

    def __init__(self, key: tuple[Any, ...], reader: Any, writer: Any) -> None:
        self.key = key
        self.reader: asyncio.StreamReader = reader
        self.writer: asyncio.StreamWriter = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Connections kept open between requests, per origin, TLS context and proxy: a build's
    requests share them, and a daemon keeps one pool between builds."""

    def __init__(self, keepalive: float = KEEPALIVE) -> None:
        self.keepalive = keepalive
        self._idle: dict[tuple[Any, ...], list[_Connection]] = {}
        self._contexts: dict[int, ssl.SSLContext] = {}  # held, so their ids stay theirs

    def take(self, key: tuple[Any, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self.keepalive and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def give(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def key(self, *parts: Any, context: ssl.SSLContext | None) -> tuple[Any, ...]:
        if context is not None:
            self._contexts[id(context)] = context
        return (*parts, id(context) if context is not None else 0)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Body:
    """An answer's body on its connection: once read to its end, the connection is kept (if
    the server keeps it); given up before, the connection is closed."""

    def __init__(
        self, pieces: AsyncIterator[bytes] | None, conn: _Connection | None, keep: Any
    ) -> None:
        self._pieces = pieces
        self._conn = conn
        self._keep = keep
        self._open = pieces is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._pieces is None:
            return
        try:
            async for piece in self._pieces:
                yield piece
        except BaseException:
            self.close()
            raise
        if self._open:
            self._open = False
            self._keep()

    def close(self) -> None:
        if self._open and self._conn is not None:
            self._open = False
            self._conn.close()


class Response:
    """An answer whose body is read as it comes (:meth:`aiter_bytes`), or whole (:meth:`aread`);
    the connection goes back to the pool once the body is read to its end."""

    def __init__(self, status_code: int, headers: Headers, body: _Body) -> None:
        self.status_code = status_code
        self.headers = headers
        self._body = body
        self._content: bytes | None = None

    async def aiter_bytes(self, chunk_size: int = _CHUNK) -> AsyncIterator[bytes]:
        """The body's bytes in pieces of ``chunk_size`` (the last one shorter): a caller that
        reports each piece (a pull's progress) does so per piece it asked for, not per read."""
        if self._content is not None:
            for start in range(0, len(self._content), chunk_size):
                yield self._content[start : start + chunk_size]
            return
        held = bytearray()
        async for piece in self._body.chunks():
            held += piece
            while len(held) >= chunk_size:
                yield bytes(held[:chunk_size])
                del held[:chunk_size]
        if held:
            yield bytes(held)

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self._body.chunks()])
        return self._content

    @property
    def text(self) -> str:
        """The body read by :meth:`aread`, as text."""
        return (self._content or b"").decode("utf-8", "replace")

    async def aclose(self) -> None:
        """Done with the answer: an unread body closes its connection."""
        self._body.close()


_UNTIL_CLOSED = object()


class _Request:
    """What is sent, the same bytes each time (a request is asked again on a new connection
    when a kept one turns out closed)."""

    def __init__(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> None:
        self.method, self.url, self.headers, self.content = method, url, headers, content
        self.target = self.host = self.proxy_authorization = ""
        given = {k.lower() for k in headers}
        self.chunked = isinstance(content, AsyncIterable) and "content-length" not in given

    def head(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {self.host}"]
        if self.proxy_authorization:
            lines.append(f"Proxy-Authorization: {self.proxy_authorization}")
        given = {k.lower() for k in self.headers}
        if "user-agent" not in given:
            lines.append("User-Agent: llbkit")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: gzip")
        content = self.content
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif "content-length" not in given and isinstance(content, bytes):
            lines.append(f"Content-Length: {len(content)}")
        elif "content-length" not in given and self.method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")  # no body, said (as Go says it)
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + content if isinstance(content, bytes) else head


class Client:
    """Requests with one TLS setting and timeout, on a :class:`Pool` (its own, unless given
    one to share). ``verify``: ``True`` for the machine's CAs, ``False`` for none, or a context."""

    def __init__(
        self, verify: ssl.SSLContext | bool = True, timeout: float = 30.0, pool: Pool | None = None
    ) -> None:
        self.timeout = timeout
        self._verify = verify
        self._pool = pool or Pool()
        self._owns_pool = pool is None

    async def aclose(self) -> None:
        if self._owns_pool:
            await self._pool.aclose()

    async def get(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Response:
        """A GET whose answer is read whole."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        headers = {"Authorization": basic(*auth)} if auth else {}
        return await self.request("GET", url, headers=headers)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> Response:
        """A request whose answer is read whole."""
        response = await self.send(method, url, headers=headers, content=content)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> Response:
        """A request, following redirects as Go does; the answer's body is not read yet (the
        caller reads it, or closes the answer)."""
        sent = dict(headers or {})
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._exchange(method, url, sent, content)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            await _discard(response)
            target = urljoin(url, location)
            if (response.status_code == 303 and method != "HEAD") or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, content = "GET", None
                sent = {k: v for k, v in sent.items() if not k.lower().startswith("content-")}
            elif content is not None and not isinstance(content, bytes):
                raise HTTPError(f"{url}: redirected, and a streamed body cannot be sent again")
            if not _same_host(first, target):
                sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
            url = target
        raise HTTPError(f"{first}: stopped after {MAX_REDIRECTS} redirects")

    # -- one exchange ----------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        from llbkit.core.registry.tls import system_context, trust

        if self._verify is True:
            context = system_context()
            trust(context)  # the machine's CAs, read at the first HTTPS request
            return context
        if self._verify is False:
            return _unverified()
        return self._verify

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HTTPError(f"{url}: not an http or https URL")
        host = parts.hostname
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise HTTPError(f"{url}: not a valid port") from None
        try:
            proxy = proxy_for(scheme, host, port)
        except ProxyError as err:
            raise HTTPError(str(err)) from None
        request = _Request(method, url, headers, content)
        if proxy is not None and scheme == "http":  # sent whole to the proxy, which forwards it
            request.target = url.partition("#")[0]
            request.proxy_authorization = proxy.authorization
        else:
            request.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request.host = parts.netloc.rpartition("@")[2]
        context = self._context() if scheme == "https" else None
        key = self._pool.key(scheme, host, port, proxy, context=context)
        conn = self._pool.take(key)
        if conn is not None and not isinstance(content, AsyncIterable):
            try:
                return await self._over(conn, request)
            except _Unanswered:
                pass  # a kept connection the server closed as it was reused: Go asks again
        conn = await self._open(key, host, port, context, proxy)
        return await self._over(conn, request)

    async def _over(self, conn: _Connection, request: _Request) -> Response:
        """``request`` sent on ``conn``, and its answer (the body still to read)."""
        content = request.content
        salvaged = False
        try:
            try:
                await self._write(conn, request.head())
                if isinstance(content, AsyncIterable):
                    chunked = request.chunked
                    async for piece in content:
                        if piece:
                            await self._write(
                                conn, b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                            )
                    if chunked:
                        await self._write(conn, b"0\r\n\r\n")
                status, version, headers = await self._read_head(conn)
            except Broken:
                # The server may have answered, then reset the connection under the rest of
                # the request (a size limit, a refused token): that answer is the answer.
                answered = _answered_before(conn)
                if answered is None:
                    raise
                conn.close()
                conn, salvaged = answered, True
                status, version, headers = await self._read_head(conn)
            keep = version == "HTTP/1.1" and "close" not in headers.get("connection").lower()
            keep = keep and not salvaged
            body = self._body(conn, request, status, headers)
            if body is _UNTIL_CLOSED:
                body, keep = self._to_close(conn), False
            if body is not None:
                body = _decoded(body, headers.get("content-encoding"))
        except BaseException:
            conn.close()
            raise
        if body is None:
            self._release(conn, keep)
            return Response(status, headers, _Body(None, None, None))
        kept = functools.partial(self._release, conn, keep)
        return Response(status, headers, _Body(body, conn, kept))

    def _body(self, conn: _Connection, request: _Request, status: int, headers: Headers) -> Any:
        """How the answer's body is read: ``None`` when it has none."""
        length = headers.get("content-length").strip()
        if request.method == "HEAD" or status in (204, 304):
            return None
        if headers.get("transfer-encoding").lower().rsplit(",", 1)[-1].strip() == "chunked":
            return self._chunked(conn)
        if length:
            if not length.isdigit():
                raise HTTPError(f"{request.url}: Content-Length {length[:40]!r} is not a number")
            return self._sized(conn, int(length))
        return _UNTIL_CLOSED

    def _release(self, conn: _Connection, keep: bool) -> None:
        """A connection whose answer was read to its end: kept if the server keeps it."""
        if keep:
            self._pool.give(conn)
        else:
            conn.close()

    async def _open(
        self,
        key: tuple[Any, ...],
        host: str,
        port: int,
        context: ssl.SSLContext | None,
        proxy: Proxy | None,
    ) -> _Connection:
        via = "" if proxy is None else f"the proxy {proxy.host}:{proxy.port}: "
        try:
            async with asyncio.timeout(self.timeout):
                if proxy is None:
                    reader, writer = await _connect(
                        host, port, ssl=context, server_hostname=host if context else None
                    )
                    return _Connection(key, reader, writer)
                reader, writer = await _connect(proxy.host, proxy.port)
                conn = _Connection(key, reader, writer)
                if context is not None:
                    try:
                        await self._tunnel(conn, host, port, proxy, context)
                    except BaseException:
                        conn.close()
                        raise
                return conn
        except TimeoutError:
            raise ConnectTimeout(f"{via}no answer to connect") from None
        except OSError as err:  # refused, unreachable, or TLS (ssl.SSLError is an OSError)
            raise HTTPError(via + _why(err, proxy.host if proxy else host)) from None

    async def _tunnel(
        self, conn: _Connection, host: str, port: int, proxy: Proxy, context: ssl.SSLContext
    ) -> None:
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, _, _ = await self._read_head(conn)
        if not 200 <= status < 300:
            raise HTTPError(f"the proxy {proxy.host}:{proxy.port} refused {host}:{port} ({status})")
        await conn.writer.start_tls(context, server_hostname=host)

    async def _write(self, conn: _Connection, data: bytes) -> None:
        try:
            conn.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await conn.writer.drain()
        except TimeoutError:
            raise WriteTimeout("the server took nothing more") from None
        except OSError as err:
            # nothing of the answer came: a kept connection closed idle is asked again
            reason = err.strerror or err
            raise _Unanswered(f"the connection broke while sending ({reason})") from None

    async def _read_head(self, conn: _Connection) -> tuple[int, str, Headers]:
        """The status line and fields of the next final answer (1xx ones skipped)."""
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                raise ReadTimeout("no answer") from None
            except asyncio.IncompleteReadError as err:
                if not err.partial:
                    said = "the server closed the connection without answering"
                    raise _Unanswered(said) from None
                raise Broken("the server closed the connection in its answer's head") from None
            except asyncio.LimitOverrunError:
                raise HTTPError("the answer's header fields are over 64 kB") from None
            except OSError as err:
                raise Broken(f"the connection broke ({err.strerror or err})") from None
            status, version, headers = _parse_head(raw)
            if not 100 <= status < 200 or status == 101:
                return status, version, headers

    async def _read(self, conn: _Connection, n: int) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await conn.reader.read(n)
        except TimeoutError:
            raise ReadTimeout("the body stopped coming") from None
        except OSError as err:
            raise Broken(f"the connection broke ({err.strerror or err})") from None

    async def _sized(self, conn: _Connection, length: int) -> AsyncIterator[bytes]:
        left = length
        while left:
            piece = await self._read(conn, min(left, _READ))
            if not piece:
                raise Broken(
                    "peer closed connection without sending complete message body "
                    f"(received {length - left} bytes, expected {length})"
                )
            left -= len(piece)
            yield piece

    async def _chunked(self, conn: _Connection) -> AsyncIterator[bytes]:
        while True:
            line = await self._line(conn)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HTTPError(f"a chunk's size is {line[:40]!r}, not a number") from None
            if size == 0:
                while await self._line(conn):  # the trailer's fields, unused
                    pass
                return
            left = size
            while left:
                piece = await self._read(conn, min(left, _READ))
                if not piece:
                    raise Broken("peer closed connection in the middle of a chunk")
                left -= len(piece)
                yield piece
            if await self._line(conn):
                raise HTTPError("a chunk is longer than its size says")

    async def _line(self, conn: _Connection) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return (await conn.reader.readuntil(b"\r\n"))[:-2]
        except TimeoutError:
            raise ReadTimeout("the body stopped coming") from None
        except asyncio.IncompleteReadError:
            raise Broken("peer closed connection in the middle of a chunked body") from None
        except asyncio.LimitOverrunError:
            raise HTTPError("a chunk's header line is over 64 kB") from None
        except OSError as err:
            raise Broken(f"the connection broke ({err.strerror or err})") from None

    async def _to_close(self, conn: _Connection) -> AsyncIterator[bytes]:
        while piece := await self._read(conn, _READ):
            yield piece


async def _connect(
    host: str, port: int, **options: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``host``: each address ``/etc/hosts`` lists for it in turn, else the
    resolver's."""
    *others, last = listed(host) or [host]
    for address in others:
        try:
            return await asyncio.open_connection(address, port, **options)
        except OSError:
            continue  # the next address, as Go's dialer goes on
    return await asyncio.open_connection(last, port, **options)


def _answered_before(conn: _Connection) -> _Connection | None:
    """What the server answered before the connection broke, as a connection that reads it
    (and then ends), or ``None``. asyncio's reader raises the reset before it hands over the
    bytes it holds, so they are taken from its buffer."""
    held = bytes(getattr(conn.reader, "_buffer", b""))
    if not held.startswith(b"HTTP/"):
        return None
    reader = asyncio.StreamReader()
    reader.feed_data(held)
    reader.feed_eof()
    return _Connection(conn.key, reader, conn.writer)


def _why(err: OSError, host: str) -> str:
    """Why a connection to ``host`` could not be made, as Go says it (``connection refused``,
    ``lookup HOST: no such host``)."""
    if isinstance(err, socket.gaierror):
        unknown = err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))
        return f"lookup {host}: " + ("no such host" if unknown else str(err.strerror).lower())
    if isinstance(err, ssl.SSLError) or not err.errno:
        return str(err.strerror or err)
    return os.strerror(err.errno).lower()


def _parse_head(raw: bytes) -> tuple[int, str, Headers]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise HTTPError(f"the answer is not HTTP ({lines[0][:60]!r})")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if colon:
            fields.append((name.strip(), value.strip()))
    return int(code), version, Headers(fields)


async def _discard(response: Response) -> None:
    """A redirect's body: read when small (its connection is kept), else closed."""
    length = response.headers.get("content-length")
    if length.isdigit() and int(length) <= _CHUNK:
        with contextlib.suppress(HTTPError):
            await response.aread()
    await response.aclose()


def _decoded(pieces: AsyncIterator[bytes], coding: str) -> AsyncIterator[bytes]:
    """A body decoded for its ``Content-Encoding`` (gzip is asked for, as Go asks)."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return pieces
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise HTTPError(f"the answer is encoded as {coding!r}, which was not asked for")
    return _inflated(pieces, coding)


async def _inflated(pieces: AsyncIterator[bytes], coding: str) -> AsyncIterator[bytes]:
    inflate = zlib.decompressobj(31 if "gzip" in coding else 15)
    try:
        async for piece in pieces:
            if out := inflate.decompress(piece):
                yield out
        if out := inflate.flush():
            yield out
    except zlib.error as err:
        raise HTTPError(f"the answer's {coding} body is corrupt ({err})") from None


def _same_host(url: str, target: str) -> bool:
    """Whether a redirect stays where ``Authorization`` may follow it (Go: the same host, or
    one of its subdomains)."""
    here, there = urlsplit(url).hostname or "", urlsplit(target).hostname or ""
    return there == here or there.endswith("." + here)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@functools.cache
def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
