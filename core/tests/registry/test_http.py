"""The registry's HTTP client against a server that records what it was sent, byte for byte:
framing both ways, kept connections, redirects, encodings, proxies."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from llbkit.core.registry import hosts as hostsfile
from llbkit.core.registry import http
from llbkit.core.registry.hosts import listed
from llbkit.core.registry.http import Broken, Client, HTTPError, Pool, ReadTimeout


@dataclass
class Seen:
    """A request as the server read it."""

    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """Answers each request with ``answer(seen)``'s bytes (closing the connection after one
    that says ``Connection: close``); keeps what it was sent."""

    answer: Callable[[Seen], bytes]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (f.partition(":") for f in fields)
                    if k
                }
                body = b""
                if headers.get("transfer-encoding") == "chunked":
                    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                elif "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                seen = Seen(line, headers, body)
                self.seen.append(seen)
                answer = self.answer(seen)
                writer.write(answer)
                await writer.drain()
                if b"\r\nConnection: close\r\n" in answer:
                    return
        finally:
            writer.close()


@asynccontextmanager
async def server(answer: Callable[[Seen], bytes]) -> AsyncIterator[Server]:
    running = Server(answer)
    listening = await asyncio.start_server(running.serve, "127.0.0.1", 0)
    running.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield running


def ok(body: bytes = b"hello", *extra: str) -> bytes:
    fields = "".join(f"{e}\r\n" for e in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{fields}\r\n".encode() + body


def test_kept_connections_carry_requests_framed_every_way() -> None:
    """Sized, chunked and empty answers read whole; one connection for all of them."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    answers = {
        "/sized": ok(b"sized body"),
        "/chunked": chunked,
        "/none": b"HTTP/1.1 204 No Content\r\n\r\n",
    }

    async def run() -> tuple[list[bytes], int]:
        async with server(lambda s: answers[s.line.split()[1]]) as srv:
            client = Client(timeout=5)
            got = []
            for path in ("/sized", "/chunked", "/none", "/sized"):
                response = await client.request("GET", srv.url + path)
                got.append(await response.aread())
            head = await client.request("HEAD", srv.url + "/none")
            assert head.status_code == 204
            await client.aclose()
            return got, srv.connections

    got, connections = anyio.run(run)
    assert got == [b"sized body", b"abcde", b"", b"sized body"]
    assert connections == 1


def test_a_head_answer_has_no_body_whatever_its_length_says() -> None:
    """A HEAD's ``Content-Length`` is the GET's: nothing follows, and the connection is kept."""

    def answer(seen: Seen) -> bytes:
        if seen.line.startswith("HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        return ok(b"0123456789")

    async def run() -> tuple[str, bytes, int]:
        async with server(answer) as srv:
            client = Client(timeout=5)
            head = await client.request("HEAD", srv.url + "/blob")
            got = await client.request("GET", srv.url + "/blob")
            await client.aclose()
            return head.headers.get("content-length"), await got.aread(), srv.connections

    assert anyio.run(run) == ("10", b"0123456789", 1)


def test_an_idle_connection_past_its_keepalive_is_not_reused() -> None:
    async def run() -> int:
        async with server(lambda s: ok()) as srv:
            pool = Pool(keepalive=0)
            client = Client(timeout=5, pool=pool)
            for _ in range(2):
                await client.request("GET", srv.url + "/")
            await pool.aclose()
            return srv.connections

    assert anyio.run(run) == 2


def test_an_unread_body_closes_its_connection_and_the_next_request_opens_one() -> None:
    async def run() -> int:
        async with server(lambda s: ok(b"x" * 100_000)) as srv:
            client = Client(timeout=5)
            response = await client.send("GET", srv.url + "/big")
            await response.aclose()  # not read
            assert (await client.request("GET", srv.url + "/big")).status_code == 200
            await client.aclose()
            return srv.connections

    assert anyio.run(run) == 2


def test_bodies_are_sent_sized_or_chunked() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"", b"two"):
            yield piece

    async def run() -> list[Seen]:
        async with server(lambda s: ok(b"")) as srv:
            client = Client(timeout=5)
            await client.request("PUT", srv.url + "/a", content=b"bytes body")
            await client.request("PATCH", srv.url + "/b", content=pieces())
            await client.request(
                "PUT", srv.url + "/c", content=pieces(), headers={"Content-Length": "7"}
            )
            await client.request("POST", srv.url + "/d")
            await client.aclose()
            return srv.seen

    a, b, c, d = anyio.run(run)
    assert (a.body, a.headers["content-length"]) == (b"bytes body", "10")
    assert (b.body, b.headers["transfer-encoding"]) == (b"one two", "chunked")
    assert (c.body, "transfer-encoding" in c.headers) == (b"one two", False)
    assert (d.line, d.headers["content-length"], d.body) == ("POST /d HTTP/1.1", "0", b"")


def test_a_gzipped_answer_is_decoded() -> None:
    packed = gzip.compress(b'{"token": "t"}')

    async def run() -> bytes:
        async with server(lambda s: ok(packed, "Content-Encoding: gzip")) as srv:
            client = Client(timeout=5)
            response = await client.request("GET", srv.url + "/token")
            await client.aclose()
            assert srv.seen[0].headers["accept-encoding"] == "gzip"
            return await response.aread()

    assert anyio.run(run) == b'{"token": "t"}'


def test_redirects_keep_authorization_on_their_host_only() -> None:
    """As Go: a 307 keeps the method and body; a 303 becomes a GET; Authorization goes to the
    same host, never to another."""

    async def run() -> tuple[list[Seen], list[Seen]]:
        async with server(lambda s: ok(b"stored")) as other:

            def answer(seen: Seen) -> bytes:
                path = seen.line.split()[1]
                where = {
                    "/put": "/put2",
                    "/post": f"{other.url.replace('127.0.0.1', 'localhost')}/there",
                }.get(path)
                if where is None:
                    return ok(b"done")
                status = "307 Temporary Redirect" if path == "/put" else "303 See Other"
                return (
                    f"HTTP/1.1 {status}\r\nLocation: {where}\r\nContent-Length: 0\r\n\r\n".encode()
                )

            async with server(answer) as here:
                client = Client(timeout=5)
                auth = {"Authorization": "Bearer secret"}
                put = await client.request("PUT", here.url + "/put", content=b"data", headers=auth)
                assert await put.aread() == b"done"
                post = await client.request("POST", here.url + "/post", content=b"x", headers=auth)
                assert await post.aread() == b"stored"
                await client.aclose()
                return here.seen, other.seen

    here, other = anyio.run(run)
    assert [(s.line, s.body, s.headers.get("authorization")) for s in here] == [
        ("PUT /put HTTP/1.1", b"data", "Bearer secret"),
        ("PUT /put2 HTTP/1.1", b"data", "Bearer secret"),
        ("POST /post HTTP/1.1", b"x", "Bearer secret"),
    ]
    assert [(s.line, s.body, s.headers.get("authorization")) for s in other] == [
        ("GET /there HTTP/1.1", b"", None)
    ]


def test_a_body_cut_short_and_a_stalled_answer_are_errors_that_say_so() -> None:
    async def run() -> tuple[str, str]:
        short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
        async with server(lambda s: short) as srv:
            client = Client(timeout=5)
            response = await client.send("GET", srv.url + "/")
            with pytest.raises(Broken) as cut:
                await response.aread()
            await client.aclose()
        async with server(lambda s: b"") as silent:
            client = Client(timeout=0.2)
            with pytest.raises(ReadTimeout) as stalled:
                await client.request("GET", silent.url + "/")
            await client.aclose()
        return str(cut.value), str(stalled.value)

    cut, stalled = anyio.run(run)
    assert cut == (
        "peer closed connection without sending complete message body "
        "(received 3 bytes, expected 10)"
    )
    assert stalled == "no answer"


def test_an_answer_that_is_not_http_is_refused() -> None:
    async def run() -> None:
        async with server(lambda s: b"SSH-2.0-OpenSSH\r\n\r\n") as srv:
            client = Client(timeout=5)
            try:
                await client.request("GET", srv.url + "/")
            finally:
                await client.aclose()

    with pytest.raises(HTTPError, match="the answer is not HTTP"):
        anyio.run(run)


def test_a_proxy_gets_the_whole_url_and_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is never proxied (Go's rule), so the registry here has a name the proxy alone
    knows; an HTTPS one is asked for with CONNECT, and the proxy's refusal is an error."""

    def proxy_answer(seen: Seen) -> bytes:
        if seen.line.startswith("CONNECT"):
            return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
        return ok(b"via proxy")

    async def run() -> list[Seen]:
        async with server(proxy_answer) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://me:p%40ss@127.0.0.1:{proxy.port}")
            monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
            client = Client(timeout=5)
            got = await client.request("GET", "http://registry.test:5000/v2/?x=1")
            assert await got.aread() == b"via proxy"
            with pytest.raises(HTTPError, match=r"the proxy 127\.0\.0\.1:\d+ refused"):
                await client.request("GET", "https://registry.test/v2/")
            await client.aclose()
            return proxy.seen

    plain, tunnel = anyio.run(run)
    assert plain.line == "GET http://registry.test:5000/v2/?x=1 HTTP/1.1"
    assert plain.headers["host"] == "registry.test:5000"
    assert plain.headers["proxy-authorization"] == http.basic("me", "p@ss")
    assert tunnel.line == "CONNECT registry.test:443 HTTP/1.1"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # a host that does not resolve, named as Go names it
        ("http://nosuch.invalid/v2/", r"^lookup nosuch\.invalid: "),
        ("http://127.0.0.1:1/v2/", r"^connection refused$"),
    ],
)
def test_a_connection_that_cannot_be_made_says_why(url: str, said: str) -> None:
    async def run() -> None:
        client = Client(timeout=5)
        try:
            await client.request("GET", url)
        finally:
            await client.aclose()

    with pytest.raises(HTTPError, match=said):
        anyio.run(run)


def test_a_body_comes_in_the_pieces_asked_for() -> None:
    """A pull reports its progress per piece: pieces of the size it asks for, however the
    reads come (not a line per 64 kB read)."""
    body = bytes(range(256)) * 400

    async def run() -> list[int]:
        async with server(lambda s: ok(body)) as srv:
            client = Client(timeout=5)
            response = await client.send("GET", srv.url + "/blob")
            sizes = [len(piece) async for piece in response.aiter_bytes(30_000)]
            await response.aclose()
            await client.aclose()
            return sizes

    assert anyio.run(run) == [30_000, 30_000, 30_000, 12_400]


def test_hosts_file_names_are_read_as_go_reads_them(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# a comment\n"
        "127.0.0.1 localhost   # the loopback\n"
        "::1 localhost ip6-localhost\n"
        "127.0.0.1 LocalHost\n"  # the same address twice: listed once
        "10.0.0.7 Registry.Test mirror.test\n"
        "fe80::1%eth0 linklocal.test\n"
        "not-enough-fields\n"
    )
    assert listed("localhost", str(hosts)) == ["127.0.0.1", "::1"]
    assert listed("REGISTRY.test.", str(hosts)) == ["10.0.0.7"]
    assert listed("mirror.test", str(hosts)) == ["10.0.0.7"]
    assert listed("linklocal.test", str(hosts)) == ["fe80::1"]
    assert listed("other.test", str(hosts)) == []
    assert listed("::1", str(hosts)) == []
    assert listed("localhost", str(tmp_path / "missing")) == []


def test_a_name_the_hosts_file_lists_is_reached_at_each_address_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address that refuses (the first: nothing listens on it) gives way to the next, and
    no resolver is asked: the name exists nowhere else."""
    hosts = tmp_path / "hosts"
    monkeypatch.setattr(hostsfile, "HOSTS", str(hosts))

    async def run() -> tuple[bytes, list[str], int]:
        async with server(lambda s: ok(b"through the hosts file")) as srv:
            hosts.write_text("127.0.0.3 registry.test\n127.0.0.1 registry.test\n")
            client = Client(timeout=5)
            try:
                response = await client.request("GET", f"http://registry.test:{srv.port}/v2/")
                return await response.aread(), [s.headers["host"] for s in srv.seen], srv.port
            finally:
                await client.aclose()

    async def refusing(address: str, port: int, **options: object) -> object:
        if address != "127.0.0.1":
            raise ConnectionRefusedError(111, "Connection refused")
        return await opened(address, port, **options)

    opened = asyncio.open_connection
    monkeypatch.setattr(asyncio, "open_connection", refusing)
    body, seen_hosts, port = anyio.run(run)
    assert body == b"through the hosts file"
    assert seen_hosts == [f"registry.test:{port}"]


@pytest.mark.parametrize("streamed", [False, True])
def test_an_answer_given_before_the_body_was_read_is_the_answer(streamed: bool) -> None:
    """A server (a proxy's size limit, an expired token) that answers at once and closes
    without reading a large body resets the connection under the upload: the client returns
    what it answered, as Go's transport does, not the broken connection."""
    refusal = (
        b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 14\r\n"
        b"Connection: close\r\n\r\nbody too large"
    )

    async def answer_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(refusal)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # unread body in the kernel's buffer: a reset, not a FIN

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * (1 << 20)
            await asyncio.sleep(0.005)

    async def run() -> tuple[int, bytes]:
        listening = await asyncio.start_server(answer_early, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        async with listening:
            client = Client(timeout=5)
            try:
                body: bytes | AsyncIterator[bytes] = pieces() if streamed else b"x" * (64 << 20)
                response = await client.request(
                    "PUT", f"http://127.0.0.1:{port}/v2/upload", content=body
                )
                return response.status_code, await response.aread()
            finally:
                await client.aclose()

    assert anyio.run(run) == (413, b"body too large")
