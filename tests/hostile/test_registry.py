"""A hostile registry (a real docker-registry behind a proxy that breaks answers, or a server
that sends too much): every failure is one line naming the host and what it was sending."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.plugins.context import Platform
from llbkit.core.reference import parse_reference
from llbkit.core.registry.client import MAX_MANIFEST, RegistryClient, RegistryError
from llbkit.sdk.testing.faults import Fault, FaultProxy, requests_to
from llbkit.sdk.testing.registry import LocalRegistry, layer_tar, push_image
from tests.hostile.cli import dockerfile_build, error_line
from tests.hostile.relay import CountingRelay
from tests.hostile.serving import serving

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(registry host, layer digest)`` of ``img:latest``, one 2 MB random layer."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    layer = layer_tar({"big": os.urandom(2_000_000)})
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as registry:
        push_image(registry.host, "img:latest", [layer])
        yield registry.host, "sha256:" + hashlib.sha256(layer).hexdigest()


@pytest.fixture
def proxy(image: tuple[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://{image[0]}") as proxy:
        yield proxy


def build_from(tmp_path: Path, host: str) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {host}/img\n")
    return error_line(
        dockerfile_build(tmp_path / "root", ctx, "--output", f"type=oci,dest={tmp_path}/o.tar")
    )


def test_an_image_that_cannot_be_resolved_shows_its_step_failed(
    tmp_path: Path, image: tuple[str, str]
) -> None:
    """As buildctl shows it: ``load metadata for`` fails with the registry's answer, its
    block and the Dockerfile's lines follow, and the error names the image as written."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {image[0]}/nosuch\nRUN true\n")
    done = dockerfile_build(tmp_path / "root", ctx)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    step = f"[internal] load metadata for {image[0]}/nosuch:latest"
    start = lines.index(f"#3 {step}")
    assert lines[start + 1 : start + 5] == [
        f"#3 ERROR: {image[0]}/nosuch:latest: not found",
        "------",
        f" > {step}:",
        "------",
    ]
    assert lines[start + 5] == "Dockerfile:1"
    message = f"error: failed to solve: {image[0]}/nosuch: {image[0]}/nosuch:latest: not found"
    assert lines[-1] == message


def test_a_truncated_layer_is_one_line(
    tmp_path: Path, image: tuple[str, str], proxy: FaultProxy
) -> None:
    proxy.fault = Fault.truncate(only=requests_to("GET", image[1]))
    host = proxy.url.removeprefix("http://")
    line = build_from(tmp_path, host)
    assert f"{host} stopped sending blob {image[1]}: peer closed connection" in line


def test_a_truncated_config_is_one_line(tmp_path: Path, proxy: FaultProxy) -> None:
    proxy.fault = Fault.truncate(only=requests_to("GET", "/blobs/"))
    host = proxy.url.removeprefix("http://")
    assert f"{host} stopped sending blob sha256:" in build_from(tmp_path, host)


def _client() -> RegistryClient:
    return RegistryClient(timeout=1.0)


def _resolve(ref: str, times: int = 1) -> list[str]:
    """The manifest digest ``ref`` resolves to, ``times`` over with one client."""

    async def run() -> list[str]:
        async with _client() as client:
            wanted, platform = parse_reference(ref), Platform("linux", "amd64")
            return [(await client.resolve(wanted, platform)).manifest_digest for _ in range(times)]

    return anyio.run(run)


def test_a_layer_that_stalls_midway_names_the_host_and_the_wait(
    image: tuple[str, str], proxy: FaultProxy
) -> None:
    proxy.fault = Fault.stall(30, midway=True, only=requests_to("GET", image[1]))
    host = proxy.url.removeprefix("http://")
    ref = parse_reference(f"{host}/img")

    async def fetch() -> None:
        async with _client() as client, client.blob(ref, image[1]) as chunks:
            async for _ in chunks:
                pass

    with pytest.raises(RegistryError) as err:
        anyio.run(fetch)
    assert str(err.value) == (
        f"{ref}: {host} stopped sending blob {image[1]}: no answer for 1s (ReadTimeout)"
    )


def test_a_stalled_manifest_gives_a_reason(proxy: FaultProxy) -> None:
    proxy.fault = Fault.stall(30, only=requests_to("GET", "/manifests/"))
    host = proxy.url.removeprefix("http://")
    with pytest.raises(RegistryError) as err:
        _resolve(f"{host}/img")
    assert str(err.value).endswith(f"({host}: no answer for 1s (ReadTimeout))")


class _Huge(BaseHTTPRequestHandler):
    """Answers every manifest with more than containerd accepts, announced or not."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        declared = "/declared/" in self.path
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if declared:
            self.send_header("Content-Length", str(MAX_MANIFEST + 1))
        self.end_headers()
        try:
            piece = b" " * (1 << 20)
            for _ in range(MAX_MANIFEST // len(piece) + 2):
                self.wfile.write(piece)
        except OSError:  # the client gave up, as it should
            pass


@pytest.mark.parametrize("repo", ["declared", "streamed"])
def test_a_huge_manifest_is_refused_without_reading_it_all(repo: str) -> None:
    with (
        serving(_Huge) as host,
        pytest.raises(RegistryError, match=r"rejecting .*manifest for .*more than 4393216"),
    ):
        _resolve(f"{host}/{repo}")


_CONFIG = b'{"architecture": "amd64", "os": "linux", "config": {}}'
_CONFIG_DESC = {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:" + hashlib.sha256(_CONFIG).hexdigest(),
    "size": len(_CONFIG),
}
_CRAFTED: dict[str, object] = {
    "pathdigest": {"config": _CONFIG_DESC, "layers": [{**_CONFIG_DESC, "digest": "sha256:../x"}]},
    "layersint": {"config": _CONFIG_DESC, "layers": 5},
    "configstr": {"config": "x", "layers": []},
    "indexints": {"manifests": [1, 2]},
    "indexpath": {
        "manifests": [{"digest": "../../x", "platform": {"os": "linux", "architecture": "amd64"}}]
    },
    "negative": {"config": {**_CONFIG_DESC, "size": -1}, "layers": []},
}


class _Crafted(BaseHTTPRequestHandler):
    """A registry whose manifests are :data:`_CRAFTED`, and its one config."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        repo = self.path.split("/")[2]
        if "/blobs/" in self.path:
            body = _CONFIG
        elif repo == "nested":  # 200 kB: arrays 100,000 deep (a RecursionError in json)
            body = b"[" * 100_000 + b"]" * 100_000
        else:
            body = json.dumps(_CRAFTED[repo]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(
    ("repo", "message"),
    [
        ("pathdigest", "layer: malformed descriptor"),
        ("layersint", "layers is not a list"),
        ("configstr", "config: malformed descriptor 'x'"),
        ("indexints", "index: manifests is not a list of objects"),
        ("indexpath", "index names '../../x', not a digest"),
        ("negative", "config: malformed descriptor"),
        ("nested", "is not JSON"),
    ],
)
def test_a_malformed_manifest_is_one_line(repo: str, message: str) -> None:
    with serving(_Crafted) as host, pytest.raises(RegistryError) as err:
        _resolve(f"{host}/{repo}")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (Fault.fail(every=1), "HTTP 500"),
        (Fault.throttle(every=1, retry_after="1"), "HTTP 429"),
        (Fault.reset(), "cannot reach the registry"),
    ],
    ids=["5xx", "429", "reset"],
)
def test_a_failing_registry_is_one_line(proxy: FaultProxy, fault: Fault, said: str) -> None:
    proxy.fault = fault
    host = proxy.url.removeprefix("http://")
    with pytest.raises(RegistryError) as err:
        _resolve(f"{host}/img")
    assert said in str(err.value) and host in str(err.value)
    assert "\n" not in str(err.value)


class _Forgetful(BaseHTTPRequestHandler):
    """A registry of one image that keeps connections open, then drops each one when it is
    used again without answering: a server that closed a kept connection as it was reused."""

    protocol_version = "HTTP/1.1"
    dropped = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served = getattr(self, "served", 0)
        self.served = served + 1
        if served:
            type(self).dropped += 1
            self.close_connection = True
            return
        if "/blobs/" in self.path:
            body = _CONFIG
        else:
            body = json.dumps({"schemaVersion": 2, "config": _CONFIG_DESC, "layers": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_kept_connection_the_server_dropped_is_asked_again() -> None:
    with serving(_Forgetful) as host:
        first, again = _resolve(f"{host}/img", times=2)
    assert first == again and first.startswith("sha256:")
    assert _Forgetful.dropped >= 2  # the config, then the second manifest


class _Loop(BaseHTTPRequestHandler):
    """Redirects every request to itself."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_loop_is_one_line() -> None:
    with (
        serving(_Loop) as host,
        pytest.raises(RegistryError, match="stopped after 10 redirects") as err,
    ):
        _resolve(f"{host}/loop")
    assert "\n" not in str(err.value)


def test_a_second_resolution_asks_only_for_the_tag(
    tmp_path: Path, image: tuple[str, str], proxy: FaultProxy
) -> None:
    """What a manifest names by digest is kept; a tag can move, so it is asked for each time,
    and a memo whose content does not match its digest is fetched again."""
    from llbkit.core.registry.client import DirectoryMemo

    ref = parse_reference(f"{proxy.url.removeprefix('http://')}/img")
    memo = DirectoryMemo(tmp_path / "memo")

    async def resolve() -> str:
        async with _client() as client:
            return (await client.resolve(ref, Platform(), memo)).manifest_digest

    first = anyio.run(resolve)
    assert proxy.count("GET", "/manifests/latest") == 1
    assert proxy.count("GET", "/blobs/") == 1
    assert anyio.run(resolve) == first
    assert proxy.count("GET", "/manifests/latest") == 2
    assert proxy.count("GET", "/blobs/") == 1
    for kept in (tmp_path / "memo").iterdir():
        kept.write_bytes(b"{}")
    assert anyio.run(resolve) == first
    assert proxy.count("GET", "/blobs/") == 2


def test_a_digest_resolved_before_is_not_asked_again(
    tmp_path: Path, image: tuple[str, str], proxy: FaultProxy
) -> None:
    """As BuildKit's local resolution: a reference pinned to a digest the memo holds is read
    from it (``any``); a daemon's client only when the registry gave that digest to the same
    credentials (``proven``); ``pull`` (``none``) always asks."""
    from llbkit.core.registry.client import DirectoryMemo
    from llbkit.core.registry.credentials import credentials_from

    host = proxy.url.removeprefix("http://")
    memo = DirectoryMemo(tmp_path / "memo")
    proven: set[tuple[str, str, str, str]] = set()

    def resolve(ref: str, reuse: Any, who: tuple[str, str] | None = None) -> str:
        async def lookup(_host: str) -> tuple[str, str] | None:
            return who

        async def run() -> str:
            async with RegistryClient(timeout=5.0, proven=proven) as client:
                return (
                    await client.resolve(parse_reference(ref), Platform(), memo, reuse=reuse)
                ).manifest_digest

        if who is None:
            return anyio.run(run)
        with credentials_from(lookup):
            return anyio.run(run)

    pinned = f"{host}/img@" + resolve(f"{host}/img", "any")
    by_digest = "/manifests/sha256:"
    assert resolve(pinned, "any") == pinned.rsplit("@", 1)[1]
    assert proxy.count("GET", by_digest) == 0
    resolve(pinned, "none")
    assert proxy.count("GET", by_digest) == 1

    alice, bob = ("alice", "secret-a"), ("bob", "secret-b")
    resolve(f"{host}/img", "proven", alice)
    resolve(pinned, "proven", alice)
    assert proxy.count("GET", by_digest) == 1  # alice was given it
    resolve(pinned, "proven", bob)
    assert proxy.count("GET", by_digest) == 2  # bob must show his own
    resolve(pinned, "proven", bob)
    assert proxy.count("GET", by_digest) == 2


def test_a_warm_build_asks_the_registry_once(
    tmp_path: Path, image: tuple[str, str], proxy: FaultProxy
) -> None:
    """The frontend asks for the tag; the step pinned to the digest it found asks nothing,
    and the layer a step reads is pulled by the first build only."""
    host = proxy.url.removeprefix("http://")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {host}/img\nCOPY Dockerfile /d\n")
    for _ in range(2):
        done = dockerfile_build(tmp_path / "root", ctx)
        assert done.returncode == 0, done.stderr
    assert proxy.count("GET", "/manifests/latest") == 2
    assert proxy.count("GET", "/manifests/sha256:") == 0
    assert proxy.count("GET", image[1]) == 1


def test_a_build_opens_one_connection_to_a_registry(tmp_path: Path, image: tuple[str, str]) -> None:
    """The resolution, the pinned step and the pull of a cold build share one connection (one
    TLS handshake on a real registry), as Go's transport does for BuildKit."""
    relay = CountingRelay(image[0])
    try:
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {relay.host}/img\nENV A=1\n")
        done = dockerfile_build(
            tmp_path / "root", ctx, "--output", f"type=oci,dest={tmp_path}/o.tar"
        )
        assert done.returncode == 0, done.stderr
        assert relay.connections == 1
    finally:
        relay.close()
