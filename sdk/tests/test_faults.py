"""FaultProxy against a small echo server: what it forwards unchanged, and each fault it makes."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from llbkit.sdk.testing import Fault, FaultProxy
from llbkit.sdk.testing.faults import requests_to


class _Echo(BaseHTTPRequestHandler):
    """Answers what it was sent (``/echo``), or ``n`` bytes (``/bytes/<n>``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.read(2)
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        body = self._body()
        if self.path.startswith("/bytes/"):
            answer = bytes(range(256)) * (int(self.path.split("/")[2]) // 256)
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = json.dumps(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "size": len(body),
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_PUT = do_POST = do_HEAD = do_GET


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream, "s3") as running:
        yield running


def test_requests_go_through_unchanged_both_ways(proxy: FaultProxy) -> None:
    """Host, path, query and signed headers as the client sent them (signatures still
    verify); a sized and a chunked body arrive whole; a large answer streams back whole."""
    data = bytes(range(256)) * 4000

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 70000):
            yield data[start : start + 70000]

    with httpx.Client(timeout=5) as client:
        sized = client.put(
            f"{proxy.url}/b/key%3Aname?partNumber=1",
            content=data,
            headers={"x-amz-date": "20260101T000000Z", "Authorization": "AWS4 sig"},
        ).json()
        chunked = client.put(f"{proxy.url}/b/chunked", content=chunks()).json()
        big = client.get(f"{proxy.url}/bytes/{5 << 20}")
    assert sized["path"] == "/b/key%3Aname?partNumber=1"
    assert sized["headers"]["host"] == proxy.url.removeprefix("http://")
    assert sized["headers"]["authorization"] == "AWS4 sig"
    assert sized["headers"]["x-amz-date"] == "20260101T000000Z"
    for echoed in (sized, chunked):
        assert echoed["sha256"] == hashlib.sha256(data).hexdigest(), echoed
    assert chunked["headers"]["transfer-encoding"] == "chunked"
    assert len(big.content) == 5 << 20 and big.headers["content-length"] == str(5 << 20)
    assert proxy.requests == [
        ("PUT", "/b/key%3Aname?partNumber=1", 200),
        ("PUT", "/b/chunked", 200),
        ("GET", f"/bytes/{5 << 20}", 200),
    ]


def test_failures_alternate_500_and_503_by_url(proxy: FaultProxy) -> None:
    proxy.fault = Fault.fail(every=2)
    with httpx.Client(timeout=5) as client:
        got = [client.get(f"{proxy.url}/{name}").status_code for name in "aabbaa"]
        head = client.head(f"{proxy.url}/c")
        answer = client.get(f"{proxy.url}/d")
    # Each URL fails the first time it is asked, and every second time after.
    assert got == [500, 200, 503, 200, 500, 200]
    assert head.status_code == 503 and head.content == b""
    assert answer.status_code == 500 and b"<Code>InternalError</Code>" in answer.content
    assert proxy.count(status=500) == 3 and proxy.count("HEAD") == 1


def test_a_fraction_fails_the_same_requests_every_run(upstream: str) -> None:
    def statuses() -> list[int]:
        with (
            FaultProxy(upstream, fault=Fault.fail(fraction=0.5), seed=7) as proxy,
            httpx.Client(timeout=5) as client,
        ):
            return [client.get(f"{proxy.url}/x").status_code for _ in range(40)]

    first = statuses()
    assert first == statuses()
    assert 8 < first.count(200) < 32


def test_throttling_says_slow_down_as_each_service_does(upstream: str) -> None:
    with FaultProxy(upstream, "azure", Fault.throttle(every=1, retry_after="2")) as proxy:
        azure = httpx.get(f"{proxy.url}/x", timeout=5)
    with FaultProxy(upstream, "s3", Fault.throttle(every=1)) as proxy:
        s3 = httpx.get(f"{proxy.url}/x", timeout=5)
    assert azure.status_code == 429 and azure.headers["x-ms-error-code"] == "ServerBusy"
    assert azure.headers["retry-after"] == "2"
    assert s3.status_code == 429 and b"<Code>SlowDown</Code>" in s3.content
    assert "retry-after" not in s3.headers


def test_a_stall_outlasts_a_timeout_for_matching_requests_only(proxy: FaultProxy) -> None:
    proxy.fault = Fault.stall(1.0, only=requests_to("GET", "/blobs/"))
    with httpx.Client(timeout=0.3) as client:
        assert client.get(f"{proxy.url}/manifests/x").status_code == 200
        assert client.head(f"{proxy.url}/blobs/x").status_code == 200
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{proxy.url}/blobs/x")
        assert time.monotonic() - began < 0.9
    proxy.fault = Fault.stall(1.0, midway=True)
    connection = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=0.3)
    connection.request("GET", "/bytes/4096")
    answer = connection.getresponse()  # the headers come at once
    assert answer.status == 200 and answer.getheader("Content-Length") == "4096"
    with pytest.raises(TimeoutError):  # half the body, then nothing
        answer.read()
    connection.close()


def test_a_truncated_body_announces_its_length_and_stops_half_way(proxy: FaultProxy) -> None:
    proxy.fault = Fault.truncate()
    connection = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=5)
    connection.request("GET", "/bytes/4096")
    answer = connection.getresponse()
    assert answer.getheader("Content-Length") == "4096"
    with pytest.raises(http.client.IncompleteRead) as cut:
        answer.read()
    assert len(cut.value.partial) == 2048
    connection.close()


def test_a_reset_answers_nothing(proxy: FaultProxy) -> None:
    proxy.fault = Fault.reset(only=requests_to("PUT"))
    with httpx.Client(timeout=5) as client:
        with pytest.raises(httpx.TransportError):
            client.put(f"{proxy.url}/x", content=b"data")
        assert client.get(f"{proxy.url}/x").status_code == 200
    assert proxy.requests == [("PUT", "/x", 0), ("GET", "/x", 200)]


def test_a_new_fault_counts_from_the_start(proxy: FaultProxy) -> None:
    with httpx.Client(timeout=5) as client:
        proxy.fault = Fault.fail(every=3, per_url=False)
        assert [client.get(f"{proxy.url}/{n}").status_code for n in range(4)] == [
            500,
            200,
            200,
            503,
        ]
        proxy.fault = Fault.fail(every=3, per_url=False)
        assert client.get(f"{proxy.url}/x").status_code == 500
        proxy.fault = Fault.none()
        assert client.get(f"{proxy.url}/x").status_code == 200


class _Named(BaseHTTPRequestHandler):
    """Answers with its server's name: which upstream a request went to."""

    protocol_version = "HTTP/1.1"
    name = b"other"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.name)))
        self.end_headers()
        self.wfile.write(self.name)


def test_routes_send_paths_elsewhere_and_fail_in_their_flavor(upstream: str) -> None:
    """One proxy in front of a service and of the blob store its signed URLs name: a route's
    requests go to its upstream, and its failures are that server's kind."""
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
    other.daemon_threads = True
    threading.Thread(target=other.serve_forever, daemon=True).start()
    routes = {"/store/": (f"http://127.0.0.1:{other.server_address[1]}", "azure")}
    try:
        with FaultProxy(upstream, routes=routes) as proxy, httpx.Client(timeout=5) as client:
            assert client.get(f"{proxy.url}/store/blob?sig=x").content == b"other"
            assert client.get(f"{proxy.url}/api/call").json()["path"] == "/api/call"
            proxy.fault = Fault.fail(every=1, statuses=(503,))
            store = client.get(f"{proxy.url}/store/blob")
            api = client.get(f"{proxy.url}/api/call")
    finally:
        other.shutdown()
        other.server_close()
    assert store.status_code == 503 and store.headers["x-ms-error-code"] == "ServerBusy"
    assert api.status_code == 503 and "x-ms-error-code" not in api.headers
    assert [status for _, _, status in proxy.requests] == [200, 200, 503, 503]
