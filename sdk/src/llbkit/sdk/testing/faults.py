"""A reverse proxy on loopback that breaks requests on demand, for cache backends' tests.

:class:`FaultProxy` forwards every request to a real server (moto's S3, Azurite, an
:class:`~llbkit.sdk.testing.HttpStore`) and, when told, fails some with 500/503, answers 429,
stalls a response past a client's timeout, truncates a body or resets the connection. The
``Host`` header, the path and every signed header go through unchanged, so S3's SigV4 and
Azure's SharedKey signatures still verify at the upstream; bodies are streamed both ways.
``routes`` sends some paths to another server: one proxy in front of a service and of the blob
store its signed URLs name (``{"/devstoreaccount1/": ("http://127.0.0.1:10000", "azure")}``)
breaks both alike.

    with FaultProxy("http://127.0.0.1:9000", flavor="s3") as proxy:
        proxy.fault = Fault.fail(every=2)  # then Fault.throttle(), Fault.stall(2.0, only=...)
        ...  # point the client at proxy.url
"""

from __future__ import annotations

import contextlib
import http.client
import io
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "FaultProxy", "Flavor", "Match", "Routes", "requests_to"]

#: which requests a fault applies to: ``(method, path)``, the path unquoted, without its query
Match = Callable[[str, str], bool]
#: whose error bodies a failure carries: S3's XML, Azure's XML and error-code header, or text
Flavor = Literal["s3", "azure", "generic"]
#: requests whose path starts with a prefix go to another upstream, failing in its flavor
Routes = Mapping[str, tuple[str, Flavor]]
Kind = Literal["none", "fail", "throttle", "stall", "truncate", "reset"]

#: headers that describe one connection, not the request: never forwarded as they are
_HOP = frozenset(
    "connection keep-alive proxy-connection proxy-authenticate proxy-authorization te trailer "  # noqa: SIM905 - words, not a column of quotes
    "transfer-encoding upgrade expect".split()
)
_CHUNK = 64 << 10
_CODES: dict[Flavor, dict[int, str]] = {
    "s3": {500: "InternalError", 503: "ServiceUnavailable", 429: "SlowDown"},
    "azure": {500: "InternalError", 503: "ServerBusy", 429: "ServerBusy"},
    "generic": {},
}


def requests_to(method: str = "", part: str = "") -> Match:
    """A :data:`Match` for requests of ``method`` (any when empty) whose path holds ``part``:
    ``requests_to("GET", "/blobs/")`` is every blob download of the cache backends' layouts."""

    def match(got: str, path: str) -> bool:
        return (not method or got == method) and part in path

    return match


@dataclass(frozen=True)
class Fault:
    """What the proxy does to the requests ``only`` matches (all when ``None``).

    Build one with the class methods. A fault with ``every=n`` hits the first matching
    request and every n-th after it; ``fraction`` instead hits that share of them, at random
    (seeded: the same run hits the same requests). With ``per_url`` the count is kept per
    method and path, so an operation's own retries see the pattern whatever runs alongside.
    """

    kind: Kind = "none"
    every: int = 1
    fraction: float = 0.0
    per_url: bool = False
    seconds: float = 0.0
    midway: bool = False
    retry_after: str | None = None
    statuses: tuple[int, ...] = (500, 503)
    only: Match | None = None

    @classmethod
    def none(cls) -> Fault:
        """Forward everything as it is."""
        return cls()

    @classmethod
    def fail(
        cls,
        every: int = 2,
        *,
        fraction: float = 0.0,
        per_url: bool = True,
        statuses: tuple[int, ...] = (500, 503),
        only: Match | None = None,
    ) -> Fault:
        """Answer 500, then 503, in turn (or ``statuses``), without asking the upstream
        (``every=2``: half the requests)."""
        return cls(
            "fail", every=every, fraction=fraction, per_url=per_url, statuses=statuses, only=only
        )

    @classmethod
    def throttle(
        cls,
        every: int = 2,
        *,
        retry_after: str | None = None,
        per_url: bool = True,
        only: Match | None = None,
    ) -> Fault:
        """Answer 429 (S3's ``SlowDown``, Azure's ``ServerBusy``), with ``Retry-After`` when
        given, without asking the upstream."""
        return cls("throttle", every=every, per_url=per_url, retry_after=retry_after, only=only)

    @classmethod
    def stall(cls, seconds: float, *, midway: bool = False, only: Match | None = None) -> Fault:
        """Hold the upstream's answer for ``seconds`` before relaying it (with ``midway``, after
        its headers and half its body): what a client's read timeout is for. The upstream has
        done the request by then; a client that gave up never hears it."""
        return cls("stall", seconds=seconds, midway=midway, only=only)

    @classmethod
    def truncate(cls, *, only: Match | None = None) -> Fault:
        """Announce the whole body's length, send half of it, close the connection."""
        return cls("truncate", only=only)

    @classmethod
    def reset(cls, every: int = 1, *, only: Match | None = None) -> Fault:
        """Read the request, then reset the connection (TCP RST) without an answer."""
        return cls("reset", every=every, only=only)


@dataclass
class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; use as a context manager, ``url`` is its
    base. Switch :attr:`fault` at any time; :attr:`requests` records ``(method, path, status)``
    of each request answered (status 0: reset, no answer). A path that starts with a prefix of
    ``routes`` goes to that route's upstream instead, and fails in its flavor; the fault and
    its counts are the same for every route."""

    upstream: str
    flavor: Flavor = "generic"
    fault: Fault = field(default_factory=Fault)
    seed: int = 0
    routes: Routes = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, repr=False)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _counted: Fault | None = field(default=None, repr=False)
    _failures: int = field(default=0, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "use the proxy as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, method: str = "", part: str = "", status: int | None = None) -> int:
        """How many requests answered so far match ``method``, ``part`` and ``status``."""
        match = requests_to(method, part)
        with self._lock:
            return sum(
                1
                for got, path, code in self.requests
                if match(got, unquote(path)) and (status is None or code == status)
            )

    def _decide(self, method: str, path: str) -> tuple[Fault, int]:
        """The fault this request gets (``none`` when it is spared) and its status."""
        with self._lock:
            fault = self.fault
            if fault is not self._counted:  # a new fault counts from the start
                self._counted, self._counts, self._failures = fault, {}, 0
                self._random.seed(self.seed)
            if fault.kind == "none" or (fault.only is not None and not fault.only(method, path)):
                return Fault(), 0
            if fault.kind in ("stall", "truncate"):
                return fault, 0
            if fault.fraction:
                hit = self._random.random() < fault.fraction
            else:
                key = (method, path) if fault.per_url else ("", "")
                seen = self._counts[key] = self._counts.get(key, 0) + 1
                hit = (seen - 1) % max(fault.every, 1) == 0
            if not hit:
                return Fault(), 0
            if fault.kind == "fail":
                self._failures += 1
                return fault, fault.statuses[(self._failures - 1) % len(fault.statuses)]
            return fault, 429 if fault.kind == "throttle" else 0

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def __enter__(self) -> FaultProxy:
        targets = [("", self.upstream, self.flavor)]
        targets[:0] = [(prefix, url, flavor) for prefix, (url, flavor) in self.routes.items()]
        # The longest prefix first: "" (the upstream) takes what no route does.
        targets.sort(key=lambda target: -len(target[0]))
        self._closing.clear()
        proxy = self

        class Handler(_Forwarder):
            owner = proxy
            upstreams = tuple((p, *_address(url), flavor) for p, url, flavor in targets)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # a stalled answer ends now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Forwarder(BaseHTTPRequestHandler):
    """One client connection: requests read, judged, forwarded or broken, answered."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms waits
    owner: FaultProxy
    #: (path prefix, host, port, flavor), the longest prefix first
    upstreams: tuple[tuple[str, str, int, Flavor], ...]
    host: str = ""
    port: int = 0
    flavor: Flavor = "generic"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, http.client.HTTPException):
            self.close_connection = True  # the client or the upstream went away mid-request

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _serve(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.host, self.port, self.flavor = next(
            (host, port, flavor)
            for prefix, host, port, flavor in self.upstreams
            if path.startswith(prefix)
        )
        fault, status = self.owner._decide(self.command, path)
        body = self._request_body()
        if fault.kind == "reset" and status == 0:
            for _ in body:  # the request was sent whole; the answer never comes
                pass
            self._reset()
            return
        if status:
            for _ in body:
                pass
            self._refuse(status, fault)
            return
        self._forward(body, fault)

    def _request_body(self) -> Iterator[bytes]:
        """The request's body as it arrives: by ``Content-Length``, or chunk by chunk."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _chunked(self.rfile)
        return _sized(self.rfile, int(self.headers.get("Content-Length") or 0))

    def _refuse(self, status: int, fault: Fault) -> None:
        code = _CODES[self.flavor].get(status, "")
        headers = {"Content-Type": "application/xml" if code else "text/plain"}
        if self.flavor == "azure" and code:
            headers["x-ms-error-code"] = code
        if status == 429 and fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        words = http.client.responses.get(status, "Error")
        text = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{words} (a fault of the test proxy)</Message></Error>"
            if code
            else f"{words} (a fault of the test proxy)\n"
        ).encode()
        # Recorded before the answer leaves: a client that has read it finds it counted.
        self.owner._record(self.command, self.path, status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)

    def _reset(self) -> None:
        """Close with a TCP RST: the client sees "connection reset", not a clean end."""
        self.owner._record(self.command, self.path, 0)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _forward(self, body: Iterator[bytes], fault: Fault) -> None:
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            upstream.connect()
            upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP:  # Host too: signatures sign it as the client sent it
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            for piece in body:
                upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                upstream.send(b"0\r\n\r\n")
            answer = upstream.getresponse()
            self._relay(answer, fault)
        finally:
            upstream.close()

    def _relay(self, answer: http.client.HTTPResponse, fault: Fault) -> None:
        """The upstream's answer, as the fault has it: whole, late, or cut short."""
        length = answer.getheader("Content-Length")
        size = None if length is None else int(length)
        bodiless = self.command == "HEAD" or answer.status in (204, 304) or answer.status < 200
        halved = not bodiless and (
            fault.kind == "truncate" or (fault.kind == "stall" and fault.midway)
        )
        pieces = _drain(answer)
        if halved and size is None:  # where half is must be known: read it all first
            whole = answer.read()
            size, pieces = len(whole), iter([whole])
        if fault.kind == "stall" and not fault.midway and self.owner._closing.wait(fault.seconds):
            self.close_connection = True
            return
        self.owner._record(self.command, self.path, answer.status)
        self.send_response_only(answer.status, answer.reason)  # its own Date and Server
        for name, value in answer.getheaders():
            if name.lower() not in _HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if size is not None:
            self.send_header("Content-Length", str(size))
        elif not bodiless:
            self.send_header("Transfer-Encoding", "chunked")
        if fault.kind == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if bodiless:
            return
        half = size // 2 if halved and size is not None else -1
        sent = 0
        for got in pieces:
            piece = got
            if 0 <= half <= sent + len(piece):
                head, piece = piece[: half - sent], piece[half - sent :]
                self._write(head, size)
                sent, half = sent + len(head), -1
                if fault.kind == "truncate":
                    self._cut()
                    return
                self.wfile.flush()
                if self.owner._closing.wait(fault.seconds):  # stalled midway, then closed
                    self.close_connection = True
                    return
            self._write(piece, size)
            sent += len(piece)
        if size is None:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, piece: bytes, size: int | None) -> None:
        """Part of a body: as it is when its length was announced, else as a chunk."""
        if piece:
            self.wfile.write(piece if size is not None else b"%x\r\n%s\r\n" % (len(piece), piece))

    def _cut(self) -> None:
        """End the connection where the body stops: the client sees fewer bytes than it was
        told to expect."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client is already gone
            self.connection.shutdown(socket.SHUT_WR)


def _address(url: str) -> tuple[str, int]:
    target = urlsplit(url)
    assert target.hostname, f"not an upstream URL: {url!r}"
    return target.hostname, target.port or 80


def _sized(stream: io.BufferedIOBase, length: int) -> Iterator[bytes]:
    read = stream.read
    while length > 0:
        piece: bytes = read(min(_CHUNK, length))
        if not piece:
            raise ConnectionError("the client sent less than its Content-Length")
        length -= len(piece)
        yield piece


def _chunked(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """A chunked request body, decoded (trailers read and dropped)."""
    readline, read = stream.readline, stream.read
    while True:
        size = int(readline(1024).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return
        piece: bytes = read(size)
        read(2)  # the CRLF after each chunk
        yield piece


def _drain(answer: http.client.HTTPResponse) -> Iterator[bytes]:
    while piece := answer.read(_CHUNK):
        yield piece
