"""``--export-cache`` and ``--import-cache`` as a CI pipeline uses them: a real registry on
loopback, real builds on fresh state roots, the same multi-stage Dockerfile throughout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LLBKIT = [sys.executable, "-m", "llbkit.core"]
SCHEMA = ROOT / "docs/schemas/buildkit-cacheconfig-v0.schema.json"

DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS build
RUN echo built > /built.txt
COPY a.txt /src/a.txt
RUN cat /src/a.txt > /src/out.txt && echo ran-build-step

FROM ${BASE}
RUN echo final > /final.txt
COPY --from=build /src/out.txt /app/out.txt
COPY b.txt /app/b.txt
RUN ls /app > /app/list.txt && echo ran-final-step
"""
BUILD_STEPS = ("[build 2/4] RUN", "[build 3/4] COPY a.txt", "[build 4/4] RUN")
FINAL_STEPS = (
    "[stage-1 2/5] RUN",
    "[stage-1 3/5] COPY --from=build",
    "[stage-1 4/5] COPY b.txt",
    "[stage-1 5/5] RUN",
)

pytestmark = [pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for tool in ("docker-registry", "runc", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it as root)")
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image

    with LocalRegistry(tmp_path_factory.mktemp("cache-registry")) as served:
        # With a history entry, as real images have: a layer without one is named in the image's
        # history by what made it, which is not the same for a build from cache ("imported
        # sha256:…", as BuildKit says) as for the build that made it, so the digests would differ.
        history = {"history": [{"created_by": "busybox"}]}
        push_image(served.host, "library/busybox:latest", [busybox_layer()], history)
        yield served.host


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("aaa\n")
    (ctx / "b.txt").write_text("bbb\n")
    return ctx


def command(registry: str, root: Path, ctx: Path, *args: str) -> list[str]:
    """``llbkit build`` of the Dockerfile in ``ctx`` on state root ``root``."""
    return [
        *LLBKIT,
        "--root",
        str(root),
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={ctx}",
        "--opt",
        f"build-arg:BASE={registry}/library/busybox",
        *args,
    ]


def build(
    registry: str, root: Path, ctx: Path, *args: str, image: str = ""
) -> subprocess.CompletedProcess[str]:
    """One build; the same SOURCE_DATE_EPOCH every time, so the same steps give the same
    image."""
    argv = command(registry, root, ctx, "--opt", "build-arg:SOURCE_DATE_EPOCH=1700000000", *args)
    if image:
        argv += ["--output", f"type=image,name={registry}/{image},push=true"]
    return subprocess.run(argv, capture_output=True, text=True)


def steps(log: str) -> dict[str, str]:
    """Each Dockerfile step's fate in a plain progress log: CACHED or DONE (it ran)."""
    names = dict(re.findall(r"^#(\d+) (\[[^\]]+\] \S+(?: \S+)?)", log, re.M))
    fate: dict[str, str] = {}
    for number, state in re.findall(r"^#(\d+) (CACHED|DONE)", log, re.M):
        if number in names:
            fate[names[number]] = state
    found = {}
    for step in BUILD_STEPS + FINAL_STEPS:
        for name, state in fate.items():
            if name.startswith(step):
                found[step] = state
    return found


def ran(log: str) -> bool:
    """Whether a RUN step of the Dockerfile ran (its output is in the log)."""
    return re.search(r"^#\d+ [\d.]+ ran-", log, re.M) is not None


def digest_of(metadata: Path) -> str:
    return str(json.loads(metadata.read_text())["containerimage.digest"])


def test_registry_cache_max_gives_a_fresh_root_every_step(
    registry: str, context: Path, tmp_path: Path
) -> None:
    ref = f"{registry}/cache/max:latest"
    first = build(
        registry,
        tmp_path / "A",
        context,
        "--export-cache",
        f"type=registry,ref={ref},mode=max",
        "--metadata-file",
        str(tmp_path / "A.json"),
        image="app:a",
    )
    assert first.returncode == 0, first.stderr
    assert "cache.manifest" in json.loads((tmp_path / "A.json").read_text())

    second = build(
        registry,
        tmp_path / "B",
        context,
        "--import-cache",
        f"type=registry,ref={ref}",
        "--metadata-file",
        str(tmp_path / "B.json"),
        image="other:b",  # a repository without the blobs: they are mounted from the cache's
    )
    assert second.returncode == 0, second.stderr
    fates = steps(second.stderr)
    assert fates and set(fates.values()) == {"CACHED"}, second.stderr
    assert not ran(second.stderr)  # no RUN step ran
    assert digest_of(tmp_path / "B.json") == digest_of(tmp_path / "A.json")
    # Nothing was downloaded, not even to push: the layers are known by their blobs only.
    du = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "B"), "du", "-v"], capture_output=True, text=True
    )
    assert "(not fetched)" in du.stdout, du.stdout
    assert not list((tmp_path / "B").rglob("blobs/sha256/*"))

    # One context file changed: only the steps that read it, and those after them, run.
    (context / "b.txt").write_text("changed\n")
    third = build(registry, tmp_path / "C", context, "--import-cache", f"type=registry,ref={ref}")
    assert third.returncode == 0, third.stderr
    fates = steps(third.stderr)
    done = {step for step, fate in fates.items() if fate == "DONE"}
    assert done == {"[stage-1 4/5] COPY b.txt", "[stage-1 5/5] RUN"}, third.stderr
    assert "[build 4/4] RUN" in fates  # the build stage was looked at, and hit


def test_registry_cache_min_holds_the_final_stage_only(
    registry: str, context: Path, tmp_path: Path
) -> None:
    ref = f"{registry}/cache/min:latest"
    first = build(registry, tmp_path / "A", context, "--export-cache", f"type=registry,ref={ref}")
    assert first.returncode == 0, first.stderr
    again = build(registry, tmp_path / "B", context, "--import-cache", f"type=registry,ref={ref}")
    assert again.returncode == 0, again.stderr
    assert not ran(again.stderr)

    (context / "b.txt").write_text("changed\n")
    changed = build(registry, tmp_path / "C", context, "--import-cache", f"type=registry,ref={ref}")
    assert changed.returncode == 0, changed.stderr
    fates = steps(changed.stderr)
    # The build stage's results were not exported (min), but its records were: the copy
    # from it is found through them (by BuildKit's keys, the context's a.txt by its content),
    # so the build stage need not run; the final stage's steps from b.txt on run.
    assert "ran-build-step" not in changed.stderr, changed.stderr
    assert fates.get("[build 4/4] RUN") != "DONE"
    assert fates["[stage-1 2/5] RUN"] == "CACHED"
    assert fates["[stage-1 3/5] COPY --from=build"] == "CACHED"
    assert fates["[stage-1 4/5] COPY b.txt"] == "DONE"
    assert fates["[stage-1 5/5] RUN"] == "DONE"


def _manifest(registry: str, repo: str, reference: str) -> httpx.Response:
    accept = ", ".join(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )
    return httpx.get(
        f"http://{registry}/v2/{repo}/manifests/{reference}", headers={"Accept": accept}
    )


def test_registry_cache_is_buildkits_layout_and_config(
    registry: str, context: Path, tmp_path: Path
) -> None:
    import jsonschema

    for mode, oci, image_manifest in (
        ("max", "true", "false"),
        ("max", "false", "false"),
        ("min", "true", "true"),
    ):
        tag = f"{mode}-{oci}-{image_manifest}"
        done = build(
            registry,
            tmp_path / tag,
            context,
            "--export-cache",
            f"type=registry,ref={registry}/cache/layout:{tag},mode={mode},"
            f"oci-mediatypes={oci},image-manifest={image_manifest}",
        )
        assert done.returncode == 0, done.stderr
        if shutil.which("skopeo"):
            raw = subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{registry}/cache/layout:{tag}",
                ],
                capture_output=True,
                text=True,
            )
            assert raw.returncode == 0, raw.stderr
            manifest = json.loads(raw.stdout)
        else:
            manifest = _manifest(registry, "cache/layout", tag).json()
        if image_manifest == "true":
            assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            config_desc = manifest["config"]
            layers = manifest["layers"]
        else:
            expected = (
                "application/vnd.oci.image.index.v1+json"
                if oci == "true"
                else "application/vnd.docker.distribution.manifest.list.v2+json"
            )
            assert manifest["mediaType"] == expected
            config_desc = manifest["manifests"][-1]
            layers = manifest["manifests"][:-1]
        assert config_desc["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
        layer_type = (
            "application/vnd.oci.image.layer.v1.tar+gzip"
            if oci == "true"
            else "application/vnd.docker.image.rootfs.diff.tar.gzip"
        )
        assert layers and {layer["mediaType"] for layer in layers} == {layer_type}
        for layer in layers:
            assert set(layer["annotations"]) == {
                "buildkit/createdat",
                "containerd.io/uncompressed",
            }
        blob = httpx.get(f"http://{registry}/v2/cache/layout/blobs/{config_desc['digest']}")
        config = blob.json()
        jsonschema.validate(config, json.loads(SCHEMA.read_text()))
        # Every layer the config names is listed by the manifest, in the config's order.
        assert [entry["blob"] for entry in config["layers"]] == [d["digest"] for d in layers]
        with_results = [r for r in config["records"] if "layers" in r]
        assert with_results
        assert config["records"] == sorted(config["records"], key=lambda r: r["digest"])


def test_local_cache_round_trip(registry: str, context: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = build(
        registry,
        tmp_path / "A",
        context,
        "--export-cache",
        f"type=local,dest={cache},mode=max,tag=v1",
    )
    assert first.returncode == 0, first.stderr
    index = json.loads((cache / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    if shutil.which("skopeo"):
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{cache}:v1"], capture_output=True, text=True
        )
        assert raw.returncode == 0, raw.stderr
        assert json.loads(raw.stdout)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    missing = build(registry, tmp_path / "B", context, "--import-cache", f"type=local,src={cache}")
    assert missing.returncode == 0, missing.stderr  # no "latest" there: nothing to import
    assert ran(missing.stderr)
    second = build(
        registry, tmp_path / "C", context, "--import-cache", f"type=local,src={cache},tag=v1"
    )
    assert second.returncode == 0, second.stderr
    assert set(steps(second.stderr).values()) == {"CACHED"}, second.stderr
    by_digest = build(
        registry,
        tmp_path / "D",
        context,
        "--import-cache",
        f"type=local,src={cache},digest={entry['digest']}",
    )
    assert by_digest.returncode == 0, by_digest.stderr
    assert not ran(by_digest.stderr)


def test_inline_cache_is_imported_from_the_image(
    registry: str, context: Path, tmp_path: Path
) -> None:
    first = build(
        registry, tmp_path / "A", context, "--export-cache", "type=inline", image="inline:v1"
    )
    assert first.returncode == 0, first.stderr
    manifest = _manifest(registry, "inline", "v1").json()
    config = httpx.get(f"http://{registry}/v2/inline/blobs/{manifest['config']['digest']}").json()
    assert "moby.buildkit.cache.v0" in config
    second = build(
        registry,
        tmp_path / "B",
        context,
        "--import-cache",
        f"type=registry,ref={registry}/inline:v1",
    )
    assert second.returncode == 0, second.stderr
    fates = steps(second.stderr)
    assert fates["[stage-1 5/5] RUN"] == "CACHED", second.stderr
    assert not ran(second.stderr)


def test_a_blob_missing_from_the_cache_reruns_its_step_and_says_which(
    registry: str, context: Path, tmp_path: Path
) -> None:
    ref = f"{registry}/cache/holes:latest"
    first = build(registry, tmp_path / "A", context, "--export-cache", f"type=registry,ref={ref}")
    assert first.returncode == 0, first.stderr
    index = _manifest(registry, "cache/holes", "latest").json()
    config_desc = index["manifests"][-1]
    config = httpx.get(f"http://{registry}/v2/cache/holes/blobs/{config_desc['digest']}").json()
    # The top layer of the final result: the last RUN's.
    final = max((r for r in config["records"] if "layers" in r), key=lambda r: _depth(config, r))
    top = config["layers"][final["layers"][0]["layer"]]["blob"]
    gone = httpx.delete(f"http://{registry}/v2/cache/holes/blobs/{top}")
    assert gone.status_code == 202, gone.text
    second = build(registry, tmp_path / "B", context, "--import-cache", f"type=registry,ref={ref}")
    assert second.returncode == 0, second.stderr
    assert f"lacks blob {top}" in second.stderr
    assert steps(second.stderr)["[stage-1 5/5] RUN"] == "DONE"
    assert steps(second.stderr)["[stage-1 4/5] COPY b.txt"] == "CACHED"


def _depth(config: dict[str, object], record: dict[str, object]) -> int:
    layers = config["layers"]
    assert isinstance(layers, list)
    index = record["layers"][0]["layer"]  # type: ignore[index]
    depth = 0
    while index != -1:
        depth += 1
        index = layers[index].get("parent", 0)
    return depth


def test_a_failed_export_fails_the_build_unless_ignore_error(
    registry: str, context: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    failed = build(
        registry, tmp_path / "A", context, "--export-cache", f"type=registry,ref={dead}/c:x"
    )
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: failed to solve: exporting cache to registry {dead}/c:x"), last
    assert "Traceback" not in failed.stderr
    ignored = build(
        registry,
        tmp_path / "A",
        context,
        "--export-cache",
        f"type=registry,ref={dead}/c:x,ignore-error=true",
    )
    assert ignored.returncode == 0, ignored.stderr
    assert f"WARN: exporting cache to registry {dead}/c:x: cannot reach" in ignored.stderr
    imported = build(
        registry,
        tmp_path / "B",
        context,
        "--import-cache",
        f"type=registry,ref={dead}/c:x,ignore-error=true",
    )
    assert imported.returncode == 0, imported.stderr
    refused = build(
        registry, tmp_path / "B", context, "--import-cache", f"type=registry,ref={dead}/c:x"
    )
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: failed to solve: importing cache manifest from registry {dead}/c:x: ")
    )


def test_a_killed_export_leaves_no_index_naming_a_missing_blob(
    registry: str, context: Path, tmp_path: Path
) -> None:
    (context / "Dockerfile").write_text(
        DOCKERFILE + "RUN head -c 48000000 /dev/urandom > /big && echo made-big\n"
    )
    cache = tmp_path / "cache"
    for delay in (0.0, 0.05, 0.3, 1.0):
        args = command(
            registry,
            tmp_path / f"root-{delay}",
            context,
            "--export-cache",
            f"type=local,dest={cache},mode=max,compression-level=9",
        )
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        for line in proc.stderr:  # the export has begun: kill it part way through
            if b"preparing build cache for export" in line:
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        _assert_whole(cache)
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _assert_whole(cache)
    assert (cache / "index.json").exists()


def _assert_whole(cache: Path) -> None:
    """index.json, if any, names only blobs that are there (and all they name are too)."""
    index = cache / "index.json"
    if not index.exists():
        return
    for entry in json.loads(index.read_text())["manifests"]:
        blob = cache / "blobs/sha256" / entry["digest"].split(":")[1]
        assert blob.exists(), entry
        manifest = json.loads(blob.read_bytes())
        for desc in manifest.get("manifests", []):
            assert (cache / "blobs/sha256" / desc["digest"].split(":")[1]).exists(), desc


def test_several_imports_are_all_asked(registry: str, context: Path, tmp_path: Path) -> None:
    ref = f"{registry}/cache/first:latest"
    cache = tmp_path / "second"
    # The first cache holds the final stage only (min), the second everything (max).
    for args in (
        ("--export-cache", f"type=registry,ref={ref}"),
        ("--export-cache", f"type=local,dest={cache},mode=max"),
    ):
        done = build(registry, tmp_path / f"A{len(args[1])}", context, *args)
        assert done.returncode == 0, done.stderr
    (context / "b.txt").write_text("changed\n")
    both = build(
        registry,
        tmp_path / "B",
        context,
        "--import-cache",
        f"type=registry,ref={ref}",
        "--import-cache",
        f"type=local,src={cache}",
    )
    assert both.returncode == 0, both.stderr
    fates = steps(both.stderr)
    assert fates["[build 4/4] RUN"] == "CACHED", both.stderr  # only the second has it
    assert fates["[stage-1 3/5] COPY --from=build"] == "CACHED"
    assert fates["[stage-1 4/5] COPY b.txt"] == "DONE"
    assert "importing cache manifest from registry" in both.stderr
    assert "importing cache manifest from local" in both.stderr


@pytest.mark.parametrize("fail_every", [0, 3])
def test_http_cache_round_trip_even_on_a_flaky_server(
    registry: str, context: Path, tmp_path: Path, fail_every: int
) -> None:
    """The config-kind index (BuildKit's s3/gha form) end to end; a server failing every third
    request is tried again, and the build does not notice."""
    from llbkit.sdk.testing import HttpStore

    with HttpStore(tmp_path / "served", fail_every=fail_every) as server:
        url = f"{server.url}/team/app"
        first = build(
            registry,
            tmp_path / "A",
            context,
            "--export-cache",
            f"type=http,url={url},mode=max",
            "--metadata-file",
            str(tmp_path / "A.json"),
            image="http:a",
        )
        assert first.returncode == 0, first.stderr
        config = json.loads((tmp_path / "served/team/app/manifests/buildkit").read_text())
        jsonschema_validate(config)
        assert all("annotations" in layer for layer in config["layers"])
        second = build(
            registry,
            tmp_path / "B",
            context,
            "--import-cache",
            f"type=http,url={url}",
            "--metadata-file",
            str(tmp_path / "B.json"),
            image="http:b",
        )
        assert second.returncode == 0, second.stderr
        assert set(steps(second.stderr).values()) == {"CACHED"}, second.stderr
        assert not ran(second.stderr)
        assert digest_of(tmp_path / "B.json") == digest_of(tmp_path / "A.json")
        if fail_every:
            assert any(code == 503 for _, _, code in server.requests)


def _export_lines(stderr: str) -> set[str]:
    """The cache export step's finished sub-tasks as the plain display prints them."""
    return {
        line.split(" ", 1)[1]
        for line in stderr.splitlines()
        if " writing " in line and line.endswith(" done")
    }


def test_a_cache_export_is_shown_as_buildkit_shows_it(
    registry: str, context: Path, tmp_path: Path
) -> None:
    """A manifest cache (local, registry) lists every layer, then its config and manifest; a
    config cache (s3, azblob, gha, http) only the layers it uploads. No byte counts."""
    from llbkit.sdk.testing import HttpStore

    def export(target: str) -> set[str]:
        done = build(registry, tmp_path / "A", context, "--export-cache", f"{target},mode=max")
        assert done.returncode == 0, done.stderr
        assert "exporting content cache\n" in done.stderr
        return _export_lines(done.stderr)

    def digests(shown: set[str]) -> set[str]:
        return {x.split(" ")[2] for x in shown if x.startswith("writing layer")}

    local = f"type=local,dest={tmp_path / 'cache'}"
    first = export(local)
    layers = digests(first)
    assert layers
    for line in first:  # no byte counts, only a time
        assert re.fullmatch(
            r"writing (layer|config|manifest) sha256:[0-9a-f]{64}( \S+s)? done", line
        )
    assert len(first) == len(layers) + 2  # its config, then its manifest
    again = export(local)  # every layer is there now: listed all the same
    assert digests(again) and len(again) == len(digests(again)) + 2
    with HttpStore(tmp_path / "served") as server:
        http = f"type=http,url={server.url}/a"
        uploaded = export(http)
        assert digests(uploaded) and len(uploaded) == len(digests(uploaded))  # no config line
        assert export(http) == set()  # every blob there: nothing to show


def jsonschema_validate(config: object) -> None:
    import jsonschema

    jsonschema.validate(config, json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("fault", ["truncate", "stall"])
def test_a_cache_that_breaks_its_blobs_fails_the_build_in_one_line(
    registry: str, context: Path, tmp_path: Path, fault: str
) -> None:
    """Its records hit, but the blobs an OCI export needs arrive cut short or too late: the
    build fails with one line naming the cache, and the store keeps no partial blob."""
    from llbkit.sdk.testing import HttpStore

    with HttpStore(tmp_path / "served") as server:
        url = f"{server.url}/app"
        first = build(registry, tmp_path / "A", context, "--export-cache", f"type=http,url={url}")
        assert first.returncode == 0, first.stderr
        if fault == "truncate":
            server.truncate_blobs = True
            args = f"type=http,url={url}"
        else:
            server.stall = 1.5
            args = f"type=http,url={url},timeout=0.5"
        broken = build(
            registry,
            tmp_path / "B",
            context,
            "--import-cache",
            args,
            "--output",
            f"type=oci,dest={tmp_path / 'image.tar'}",
        )
    assert broken.returncode == 1, broken.stderr
    last = broken.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "http http://127.0.0.1" in last, last
    assert "Traceback" not in broken.stderr
    assert not (tmp_path / "image.tar").exists()
    for blob in (tmp_path / "B").rglob("blobs/sha256/*"):  # whatever is kept is whole
        import hashlib

        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
