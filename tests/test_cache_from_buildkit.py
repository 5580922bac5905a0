"""A cache BuildKit exported, imported by llbkit: its steps hit by BuildKit's own keys; and
llbkit's export, holding the records BuildKit finds.

The caches under tests/vectors/buildkit-cache/ are what BuildKit v0.11.6 exported
(``--export-cache type=local,mode=max`` and ``mode=min``) building :data:`DOCKERFILE` on the
image :func:`push_busybox` pushes (scripts/record_buildkit_cache.py), less the base layer's blob,
which the test's image supplies. A step is found by its definition, and a step on the build
context by the content it reads of it (BuildKit's content checksum of the copied paths).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "buildkit-cache"
LLBKIT = [sys.executable, "-m", "llbkit.core"]

DOCKERFILE = """\
ARG BASE
FROM $BASE AS a
RUN echo a > /a
RUN --mount=type=cache,target=/c echo b > /b && echo c > /c/x
FROM $BASE
WORKDIR /w
COPY --from=a /a /x
COPY --from=a --chown=1:2 /b /y
RUN mkdir -p /z && echo hi > /z/f
RUN --mount=type=bind,from=a,source=/a,target=/m cat /m > /m2
ENV X=1
RUN echo $X > /env
COPY a.txt /a.txt
RUN cat /a.txt > /copied
"""
CONTEXT = {"a.txt": "from the context\n"}
#: the steps that read the build context, and those after them
READS_CONTEXT = ("[stage-1 8/9] COPY a.txt", "[stage-1 9/9] RUN cat")

pytestmark = [pytest.mark.root, pytest.mark.services]


def push_busybox(host: str) -> None:
    """The base image the caches were recorded on (its manifest digest is in their keys)."""
    from llbkit.sdk.testing.registry import busybox_layer, push_image

    history = {"history": [{"created_by": "busybox"}]}
    push_image(host, "library/busybox:latest", [busybox_layer()], history)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for tool in ("docker-registry", "runc", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it as root)")
    from llbkit.sdk.testing.registry import LocalRegistry

    with LocalRegistry(tmp_path_factory.mktemp("registry")) as served:
        push_busybox(served.host)
        yield served.host


def context_dir(where: Path) -> Path:
    where.mkdir()
    (where / "Dockerfile").write_text(DOCKERFILE)
    for name, body in CONTEXT.items():
        (where / name).write_text(body)
    return where


def buildkits_cache(mode: str, where: Path) -> Path:
    """BuildKit's cache of ``mode``, its base layer's blob put back."""
    from llbkit.sdk.testing.registry import busybox_layer

    shutil.copytree(VECTORS / mode, where)
    layer = busybox_layer()
    blob = where / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()
    blob.write_bytes(layer)
    return where


def build(
    registry: str, root: Path, ctx: Path, *args: str, base: str = "library/busybox"
) -> subprocess.CompletedProcess[str]:
    argv = [*LLBKIT, "--root", str(root), "build", "--progress", "plain", "--frontend"]
    argv += ["dockerfile.v0", "--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    argv += ["--opt", f"build-arg:BASE={registry}/{base}", *args]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ})


def fates(log: str) -> dict[str, str]:
    """Each Dockerfile step's fate in a plain progress log: CACHED or DONE (it ran)."""
    names = dict(re.findall(r"^#(\d+) (\[[^\]]+\] \S+(?: \S+)?)", log, re.M))
    found = {}
    for number, state in re.findall(r"^#(\d+) (CACHED|DONE)", log, re.M):
        if number in names and not names[number].startswith("[internal]"):
            found[names[number]] = state
    return found


@pytest.mark.parametrize("mode", ["max", "min"])
def test_buildkits_cache_hits_every_step(mode: str, registry: str, tmp_path: Path) -> None:
    ctx = context_dir(tmp_path / "ctx")
    cache = buildkits_cache(mode, tmp_path / "cache")
    out = tmp_path / "out.tar"
    done = build(
        registry,
        tmp_path / "root",
        ctx,
        "--import-cache",
        f"type=local,src={cache}",
        "--output",
        f"type=tar,dest={out}",
    )
    assert done.returncode == 0, done.stderr
    found = fates(done.stderr)
    ran = sorted(name for name, state in found.items() if state == "DONE" and "FROM" not in name)
    assert not ran, done.stderr
    assert found.get("[stage-1 9/9] RUN cat") == "CACHED", done.stderr
    # The results are BuildKit's layers, and what the steps made.
    with tarfile.open(out) as tar:
        files = {m.name: m for m in tar.getmembers()}

        def text(name: str) -> str:
            data = tar.extractfile(files[name])
            assert data is not None
            return data.read().decode()

        assert text("x") == "a\n"
        assert text("y") == "b\n"
        assert (files["y"].uid, files["y"].gid) == (1, 2)
        assert text("z/f") == "hi\n"
        assert text("m2") == "a\n"
        assert text("env") == "1\n"
        assert text("copied") == CONTEXT["a.txt"]


def test_a_step_found_by_what_it_reads_of_the_context_needs_nothing_below(
    registry: str, tmp_path: Path
) -> None:
    """The last step is found by the content its input read of the context: the image under
    it is resolved, not pulled."""
    ctx = context_dir(tmp_path / "ctx")
    cache = buildkits_cache("max", tmp_path / "cache")
    done = build(registry, tmp_path / "root", ctx, "--import-cache", f"type=local,src={cache}")
    assert done.returncode == 0, done.stderr
    assert fates(done.stderr).get("[stage-1 9/9] RUN cat") == "CACHED", done.stderr
    assert "extracting" not in done.stderr


def test_a_changed_context_runs_the_steps_that_read_it(registry: str, tmp_path: Path) -> None:
    ctx = context_dir(tmp_path / "ctx")
    (ctx / "a.txt").write_text("changed\n")
    cache = buildkits_cache("max", tmp_path / "cache")
    done = build(registry, tmp_path / "root", ctx, "--import-cache", f"type=local,src={cache}")
    assert done.returncode == 0, done.stderr
    found = fates(done.stderr)
    ran = sorted(name for name, state in found.items() if state == "DONE" and "FROM" not in name)
    assert ran == sorted(n for n in found if n.startswith(READS_CONTEXT)), done.stderr
    assert found.get("[stage-1 7/9] RUN echo") == "CACHED", done.stderr


def test_a_step_of_buildkits_cache_on_another_base_runs(registry: str, tmp_path: Path) -> None:
    """The same op on other inputs is another record: BuildKit's result is not taken."""
    from llbkit.sdk.testing.registry import busybox_layer, layer_tar, push_image

    push_image(
        registry,
        "library/other:latest",
        [busybox_layer(), layer_tar({"other": "1\n"})],
        {"history": [{"created_by": "busybox"}, {"created_by": "other"}]},
    )
    ctx = context_dir(tmp_path / "ctx")
    cache = buildkits_cache("max", tmp_path / "cache")
    done = build(
        registry,
        tmp_path / "root",
        ctx,
        "--import-cache",
        f"type=local,src={cache}",
        base="library/other",
    )
    assert done.returncode == 0, done.stderr
    assert "CACHED" not in done.stderr


def _edges(config: dict) -> tuple[set[str], set[tuple[str, int, str, str]]]:
    """A cache config's record digests, and its links as (record, input, selector, linked)."""
    records = config.get("records") or []
    edges = set()
    for record in records:
        for index, links in enumerate(record.get("inputs") or []):
            for link in links:
                linked = records[link["link"]]["digest"]
                edges.add((record["digest"], index, link.get("selector", ""), linked))
    return {r["digest"] for r in records}, edges


def _config(cache: Path) -> dict:
    blobs = cache / "blobs" / "sha256"
    top = json.loads((cache / "index.json").read_text())["manifests"][0]["digest"]
    index = json.loads((blobs / top[7:]).read_text())
    found = next(m for m in index["manifests"] if "cacheconfig" in m["mediaType"])
    return json.loads((blobs / found["digest"][7:]).read_text())


def test_llbkits_cache_holds_the_records_buildkit_would_find(registry: str, tmp_path: Path) -> None:
    """llbkit's export names each step as BuildKit's own export of the same build does, and
    links it alike, so BuildKit importing it hits: every record, with the same links from the
    same records (BuildKit's also name a stage's results by their content, which llbkit's
    need not: they are found by definition)."""
    ctx = context_dir(tmp_path / "ctx")
    cache = tmp_path / "cache"
    done = build(
        registry, tmp_path / "root", ctx, "--export-cache", f"type=local,dest={cache},mode=max"
    )
    assert done.returncode == 0, done.stderr
    ours, our_edges = _edges(_config(cache))
    theirs, their_edges = _edges(_config(VECTORS / "max"))
    shared = ours & theirs
    assert len(shared) == 13  # two of the image, ten steps, the context's content as copied
    within = {e for e in their_edges if e[0] in shared and e[3] in shared}
    assert {e for e in our_edges if e[0] in shared} == within
