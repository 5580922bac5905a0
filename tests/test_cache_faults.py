"""Cache backends behind a server that breaks, end to end: real builds on fresh state roots
through :class:`~llbkit.sdk.testing.FaultProxy` in front of moto's S3, Azurite, an HttpStore and
the fake GitHub Actions cache service (v1; v2 with its signed URLs to Azurite through the same
proxy).

A service that fails half its requests or asks to slow down costs the build nothing; one that
stalls past ``timeout`` or cuts blobs short fails it in one line naming the cache (a warning with
``ignore-error=true``); an export that breaks leaves no index naming a missing blob; the local
store keeps no partial blob.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llbkit.sdk.testing import Fault, FaultProxy, GhaCacheService, HttpStore, make_gha_token
from llbkit.sdk.testing.azurite import Azurite, azurite  # noqa: F401 - a fixture, used by name
from llbkit.sdk.testing.faults import Flavor, Match, Routes, requests_to
from tests.test_cache_export_import import (  # the same Dockerfile, build and log readers
    DOCKERFILE,
    command,
    digest_of,
    ran,
    registry,  # noqa: F401 - a fixture, used by name
    steps,
)

pytestmark = [pytest.mark.root, pytest.mark.services]

BUCKET = "llbkit-faults"
CONTAINER = "llbkit-faults"
SECRET = "fault-suite-secret"
#: small, so a stalled server costs the suite little: five tries of TIMEOUT, with backoff
TIMEOUT = "0.5"
STALL = 1.5
GETS = requests_to("GET")


@dataclass
class Remote:
    """One backend's server, reached through proxies: the flag that names a cache at a place
    (``where``) and what the server holds there, looked at directly."""

    kind: str
    upstream: str
    flavor: Flavor
    flag: Callable[[str, str], str]
    stored: Callable[[str], dict[str, bytes]]
    #: how messages name the cache at ``where`` reached through a proxy at a URL
    naming: Callable[[str, str], str]
    #: the credential the flag gives, which no output may show
    secret: str = SECRET
    #: the requests that fetch a blob, and that send one: ``(method, part of the path)``
    downloads: tuple[str, str] = ("GET", "/blobs/")
    uploads: tuple[str, str] = ("PUT", "/blobs/")
    #: paths the proxy sends to another server (a blob store the service's URLs name)
    routes: Routes = field(default_factory=dict)

    def proxy(self, fault: Fault | None = None) -> FaultProxy:
        """A proxy (not entered yet) in front of the server, breaking what ``fault`` says."""
        return FaultProxy(self.upstream, self.flavor, fault or Fault.none(), routes=self.routes)

    def named(self, proxy: FaultProxy, where: str) -> str:
        return self.naming(proxy.url, where)

    def cache(self, proxy: FaultProxy, where: str, *more: str) -> str:
        return ",".join([self.flag(proxy.url, where), *more])

    def assert_whole(self, where: str) -> dict[str, Any] | None:
        """Every blob there hashes to its name, and the index, if any, names only those."""
        objects = self.stored(where)
        for name, data in objects.items():
            if name.startswith("blobs/"):
                assert "sha256:" + hashlib.sha256(data).hexdigest() == name[6:], name
        if "manifests/buildkit" not in objects:
            return None
        config: dict[str, Any] = json.loads(objects["manifests/buildkit"])
        for layer in config["layers"]:
            assert f"blobs/{layer['blob']}" in objects, f"the index names a missing {layer}"
        return config


def _s3_remote(tmp: Path, stack: ExitStack) -> Remote:
    pytest.importorskip("moto.server", reason="moto[server] is not installed (uv sync installs it)")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stack.callback(server.stop)
    host, port = server.get_host_and_port()
    upstream = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=upstream,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    s3.create_bucket(Bucket=BUCKET)

    def flag(url: str, where: str) -> str:
        return (
            f"type=s3,bucket={BUCKET},region=us-east-1,endpoint_url={url},use_path_style=true,"
            f"access_key_id=x,secret_access_key={SECRET},prefix={where}/"
        )

    def stored(where: str) -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{where}/").get("Contents", [])
        return {
            o["Key"][len(where) + 1 :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listed
        }

    return Remote(
        "s3",
        upstream,
        "s3",
        flag,
        stored,
        lambda url, where: f"s3 s3://{BUCKET}/{where}/manifests/buildkit",
    )


def _azblob_remote(server: Azurite) -> Remote:
    from azure.storage.blob import BlobServiceClient

    def flag(url: str, where: str) -> str:
        return (
            f"type=azblob,account_url={url}/{server.account},secret_access_key={server.key},"
            f"container={CONTAINER},prefix={where}"
        )

    def stored(where: str) -> dict[str, bytes]:
        with BlobServiceClient.from_connection_string(server.connection_string) as service:
            holder = service.get_container_client(CONTAINER)
            if not holder.exists():
                return {}
            return {
                blob.name[len(where) + 1 :]: holder.download_blob(blob.name).readall()
                for blob in holder.list_blobs(name_starts_with=f"{where}/")
            }

    return Remote(
        "azblob",
        f"http://127.0.0.1:{server.port}",
        "azure",
        flag,
        stored,
        lambda url, where: f"azblob {CONTAINER}/{where}/manifests/buildkit",
        secret=server.key,
    )


def _http_remote(tmp: Path, stack: ExitStack) -> Remote:
    store = stack.enter_context(HttpStore(tmp / "served", token=SECRET))

    def flag(url: str, where: str) -> str:
        return f"type=http,url={url}/{where},token={SECRET}"

    def stored(where: str) -> dict[str, bytes]:
        base = store.root / where
        return {
            str(path.relative_to(base)): path.read_bytes()
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        }

    return Remote(
        "http", store.url, "generic", flag, stored, lambda url, where: f"http {url}/{where}"
    )


def _gha_remote(stack: ExitStack, v2: Azurite | None) -> Remote:
    """The fake Actions cache service, handing out URLs on the host each proxy is at, so the
    bytes go through it too (v2: the proxy routes the signed URLs to Azurite). Each place is
    a branch of its own: a token whose one scope is ``refs/heads/<where>`` keeps its blobs and
    index apart from the others'."""
    service = stack.enter_context(GhaCacheService(v2=v2, behind_proxy=True))
    tokens: dict[str, str] = {}

    def flag(url: str, where: str) -> str:
        token = tokens.setdefault(where, make_gha_token([(f"refs/heads/{where}", 3)]))
        return f"type=gha,{'url_v2' if v2 else 'url'}={url}/,token={token}"

    def stored(where: str) -> dict[str, bytes]:
        keys = service.keys(f"refs/heads/{where}")  # committed only, oldest first
        objects = {
            f"blobs/{key.removeprefix('buildkit-blob-1-')}": service.content(key)
            for key in keys
            if key.startswith("buildkit-blob-1-")
        }
        if indexes := [key for key in keys if key.startswith("index-")]:
            objects["manifests/buildkit"] = service.content(indexes[-1])  # what imports read
        return objects

    return Remote(
        "gha-v2" if v2 else "gha",
        service.url,
        "generic",
        flag,
        stored,
        lambda url, where: f"gha{' v2' if v2 else ''} {url}/ scope=buildkit",
        # Every token the flag gives ends in the same signature part.
        secret=make_gha_token().rsplit(".", 1)[1],
        downloads=("GET", "buildkit-blob-"),  # v1 /_artifacts/<id>/<key>, v2 entry-<id>-<key>
        uploads=("PUT", "buildkit-blob-") if v2 else ("PATCH", "/_apis/artifactcache/caches/"),
        routes=service.proxy_routes,
    )


@pytest.fixture(scope="module", params=["s3", "azblob", "http", "gha", "gha-v2"])
def remote(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Remote]:
    """Each backend's real server, for every test of the module in turn."""
    with ExitStack() as stack:
        tmp = tmp_path_factory.mktemp(request.param)
        if request.param == "s3":
            yield _s3_remote(tmp, stack)
        elif request.param == "azblob":
            pytest.importorskip("azure.storage.blob", reason="azure-storage-blob is not installed")
            yield _azblob_remote(request.getfixturevalue("azurite"))
        elif request.param == "gha":
            yield _gha_remote(stack, None)
        elif request.param == "gha-v2":
            yield _gha_remote(stack, request.getfixturevalue("azurite"))
        else:
            yield _http_remote(tmp, stack)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("aaa\n")
    (ctx / "b.txt").write_text("bbb\n")
    return ctx


@dataclass
class Exported:
    """The build every test starts from: its state root, and the image it made."""

    root: Path
    metadata: Path


@pytest.fixture(scope="module")
def exported(
    remote: Remote,
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Exported:
    """A build on a fresh root exported (mode=max) to ``shared``, through a proxy that breaks
    nothing; each backend's tests import it or export again from its root."""
    tmp = tmp_path_factory.mktemp(f"{remote.kind}-A")
    with remote.proxy() as proxy:
        begun = start(
            registry,
            tmp / "root",
            context,
            "--export-cache",
            remote.cache(proxy, "shared", "mode=max"),
            "--metadata-file",
            str(tmp / "A.json"),
            image=f"faults-{remote.kind}:a",
        )
        done = wait(begun, remote.secret)
    assert done.returncode == 0, done.stderr
    assert remote.assert_whole("shared"), "the export wrote no index"
    return Exported(tmp / "root", tmp / "A.json")


@pytest.fixture
def proxies(remote: Remote) -> Iterator[Callable[[Fault], FaultProxy]]:
    """Proxies to ``remote``'s server, each breaking requests as its fault says."""
    with ExitStack() as stack:

        def proxy(fault: Fault) -> FaultProxy:
            return stack.enter_context(remote.proxy(fault))

        yield proxy


@dataclass
class Scene:
    """What a test builds with: the backend's server, the first build, the registry, the
    context, and proxies to make."""

    remote: Remote
    exported: Exported
    registry: str
    context: Path
    proxy: Callable[[Fault], FaultProxy]

    def build(self, root: Path, *args: str, image: str = "") -> subprocess.CompletedProcess[str]:
        proc = start(self.registry, root, self.context, *args, image=image)
        return wait(proc, self.remote.secret)


@pytest.fixture
def scene(
    remote: Remote,
    exported: Exported,
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,
    proxies: Callable[[Fault], FaultProxy],
) -> Scene:
    return Scene(remote, exported, registry, context, proxies)


def start(
    registry: str,  # noqa: F811 - the fixture's value
    root: Path,
    ctx: Path,
    *args: str,
    image: str = "",
) -> subprocess.Popen[str]:
    """A build begun, not waited for: a test's builds that only wait on a server run at once."""
    argv = command(registry, root, ctx, "--opt", "build-arg:SOURCE_DATE_EPOCH=1700000000", *args)
    if image:
        argv += ["--output", f"type=image,name={registry}/{image},push=true"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait(proc: subprocess.Popen[str], secret: str) -> subprocess.CompletedProcess[str]:
    """The build's outcome; whatever it says, it never shows the cache's credential."""
    stdout, stderr = proc.communicate(timeout=120)
    assert secret not in stderr and secret not in stdout, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_one_line_failure(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The build failed with one ``error:`` line holding ``words``, and no traceback."""
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for word in words:
        assert word in last, last
    assert "Traceback" not in done.stderr, done.stderr
    return last


def assert_no_partial_blob(root: Path) -> None:
    """Whatever the local store kept hashes to its name: no partial download stays."""
    for blob in root.rglob("blobs/sha256/*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


FLAKY = {
    "fail-half": (Fault.fail(every=2), (500, 503)),
    "429": (Fault.throttle(every=2), (429,)),
}


@pytest.mark.parametrize("fault", list(FLAKY))
def test_a_flaky_or_throttling_service_costs_the_build_nothing(
    scene: Scene, broken: Broken, tmp_path: Path, fault: str
) -> None:
    """Half the requests fail (or are asked to slow down) and are tried again: the export
    lands whole, and a fresh root imports every step from it. (``broken``'s builds, begun
    first, wait out their servers meanwhile.)"""
    remote = scene.remote
    breaking, statuses = FLAKY[fault]
    proxy = scene.proxy(breaking)
    where = f"flaky-{fault}"
    export = scene.build(
        scene.exported.root, "--export-cache", remote.cache(proxy, where, "mode=max")
    )
    assert export.returncode == 0, export.stderr
    assert remote.assert_whole(where), "the export wrote no index"
    assert any(status in statuses for _, _, status in proxy.requests), proxy.requests

    seen = len(proxy.requests)
    imported = scene.build(
        tmp_path / "B",
        "--import-cache",
        remote.cache(proxy, where),
        "--metadata-file",
        str(tmp_path / "B.json"),
        image=f"faults-{remote.kind}:{fault}",  # the layers come from the cache to be pushed
    )
    assert imported.returncode == 0, imported.stderr
    fates = steps(imported.stderr)
    assert fates and set(fates.values()) == {"CACHED"}, imported.stderr
    assert not ran(imported.stderr)
    assert digest_of(tmp_path / "B.json") == digest_of(scene.exported.metadata)
    assert any(status in statuses for _, _, status in proxy.requests[seen:]), proxy.requests
    assert_no_partial_blob(tmp_path / "B")


IMPORT_FAULTS: dict[str, Callable[[Match], Fault]] = {
    "stall": lambda only: Fault.stall(STALL, only=only),
    "truncate": lambda only: Fault.truncate(only=only),
}
EXPORT_FAULTS: dict[str, Callable[[Match], Fault]] = {
    # The server has the blob; the client never hears so.
    "stall": lambda only: Fault.stall(STALL, only=only),
    "fail": lambda only: Fault.fail(every=1, statuses=(500,), only=only),
}


@dataclass
class Run:
    """A build begun against a broken server, on a fresh root; waited for once."""

    proxy: FaultProxy
    root: Path
    where: str
    proc: subprocess.Popen[str]
    dest: Path
    secret: str
    _done: subprocess.CompletedProcess[str] | None = None

    def done(self) -> subprocess.CompletedProcess[str]:
        if self._done is None:
            self._done = wait(self.proc, self.secret)
        return self._done


#: the builds against broken servers, by (import or export, fault, ignore-error)
Broken = dict[tuple[str, str, bool], Run]


@pytest.fixture(scope="module")
def broken(
    remote: Remote,
    exported: Exported,
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Broken]:
    """Every build of a backend that waits out a broken server (core tries five times, with
    backoff), begun at once: each only waits, so together they take as long as the slowest.
    Keyed by (import or export, fault, ignore-error)."""
    tmp = tmp_path_factory.mktemp(f"{remote.kind}-broken")
    runs: Broken = {}
    with ExitStack() as stack:

        def begin(key: tuple[str, str, bool], fault: Fault, where: str, flag: str) -> None:
            direction, name, ignoring = key
            proxy = stack.enter_context(remote.proxy(fault))
            more = [f"timeout={TIMEOUT}", *(["ignore-error=true"] if ignoring else [])]
            if direction == "export":
                more.append("mode=max")
            label = f"{direction}-{name}-{'ignored' if ignoring else 'failed'}"
            root, dest = tmp / label, tmp / f"{label}.tar"
            args = [flag, remote.cache(proxy, where, *more)]
            if direction == "import":  # the records hit; an OCI export needs the blobs' bytes
                args += ["--output", f"type=oci,dest={dest}"]
            proc = start(registry, root, context, *args)
            runs[key] = Run(proxy, root, where, proc, dest, remote.secret)

        blob_gets, blob_puts = requests_to(*remote.downloads), requests_to(*remote.uploads)
        for name, breaking in IMPORT_FAULTS.items():
            # Only the blobs broken: the build needs them. Its index too: nothing imports.
            begin(("import", name, False), breaking(blob_gets), "shared", "--import-cache")
            begin(("import", name, True), breaking(GETS), "shared", "--import-cache")
        for name, failing in EXPORT_FAULTS.items():
            for ignoring in (False, True):
                where = f"export-{name}-{'ignored' if ignoring else 'failed'}"
                begin(("export", name, ignoring), failing(blob_puts), where, "--export-cache")
        try:
            yield runs
        finally:
            for run in runs.values():
                if run.proc.poll() is None:  # a test failed before waiting for it
                    run.proc.kill()
                    run.proc.communicate()


@pytest.mark.parametrize("fault", list(IMPORT_FAULTS))
def test_blobs_that_stall_or_arrive_cut_fail_the_build_in_one_line(
    remote: Remote, broken: Broken, fault: str
) -> None:
    """Blobs that stall past ``timeout`` or arrive cut short, tried again and again: the build
    that needs them fails in one line naming the cache, and keeps no partial blob."""
    run = broken["import", fault, False]
    failed = run.done()
    assert_one_line_failure(failed, remote.named(run.proxy, "shared"), "cannot fetch blob")
    assert set(steps(failed.stderr).values()) == {"CACHED"}, failed.stderr
    assert run.proxy.count(*remote.downloads) >= 5, run.proxy.requests  # tried, and again
    assert not run.dest.exists()
    assert_no_partial_blob(run.root)


@pytest.mark.parametrize("fault", list(IMPORT_FAULTS))
def test_with_ignore_error_an_unreadable_cache_is_a_warning(
    remote: Remote, broken: Broken, fault: str
) -> None:
    """Its index stalls or arrives cut short too: with ``ignore-error=true`` the import is a
    warning naming the cache, and every step runs."""
    run = broken["import", fault, True]
    warned = run.done()
    assert warned.returncode == 0, warned.stderr
    said = f"WARN: importing cache manifest from {remote.named(run.proxy, 'shared')}: "
    assert said in warned.stderr, warned.stderr
    assert "Traceback" not in warned.stderr
    assert ran(warned.stderr)  # nothing imported: the steps ran
    assert run.dest.exists()
    assert_no_partial_blob(run.root)


@pytest.mark.parametrize("fault", list(EXPORT_FAULTS))
def test_an_export_that_breaks_fails_in_one_line_and_names_no_missing_blob(
    remote: Remote, broken: Broken, fault: str
) -> None:
    """Every blob upload stalls past ``timeout`` or fails: the export fails after its tries,
    in one line, or with ``ignore-error=true`` is a warning. The index is written last, so
    none names a blob the cache lacks; what blobs landed are whole."""
    method = remote.uploads[0]
    run = broken["export", fault, False]
    assert_one_line_failure(
        run.done(), f"exporting cache to {remote.named(run.proxy, run.where)}: {method} "
    )
    ignored = broken["export", fault, True]
    warned = ignored.done()
    assert warned.returncode == 0, warned.stderr
    said = f"WARN: exporting cache to {remote.named(ignored.proxy, ignored.where)}: {method} "
    assert said in warned.stderr, warned.stderr
    for done in (run, ignored):
        assert done.proxy.count(*remote.uploads) >= 5, done.proxy.requests
        assert remote.assert_whole(done.where) is None  # no index: the blobs never all landed
