"""A cache BuildKit exported, imported by llbkit: its steps hit by BuildKit's own keys.

The caches under tests/vectors/buildkit-cache/ are what BuildKit v0.11.6 exported
(``--export-cache type=local,mode=max`` and ``mode=min``) building :data:`DOCKERFILE` on the
image :func:`push_busybox` pushes (scripts/record_buildkit_cache.py), less the base layer's blob,
which the test's image supplies. Every step BuildKit knows by its definition hits; a step that
reads the build context is known to BuildKit by the content it read, which llbkit does not
compute as BuildKit does yet, so it runs, and the steps after it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
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
#: the steps that read the build context, and those after them: they run
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
def test_buildkits_cache_hits_every_step_buildkit_knows_by_definition(
    mode: str, registry: str, tmp_path: Path
) -> None:
    ctx = context_dir(tmp_path / "ctx")
    cache = buildkits_cache(mode, tmp_path / "cache")
    out = tmp_path / "out"
    done = build(
        registry,
        tmp_path / "root",
        ctx,
        "--import-cache",
        f"type=local,src={cache}",
        "--output",
        f"type=local,dest={out}",
    )
    assert done.returncode == 0, done.stderr
    found = fates(done.stderr)
    ran = sorted(name for name, state in found.items() if state == "DONE" and "FROM" not in name)
    assert ran == sorted(n for n in found if n.startswith(READS_CONTEXT)), done.stderr
    assert found.get("[stage-1 7/9] RUN echo") == "CACHED", done.stderr
    # The results are BuildKit's layers, and what the steps made.
    assert (out / "x").read_text() == "a\n"
    assert (out / "y").read_text() == "b\n"
    assert (out / "y").stat().st_uid == 1 and (out / "y").stat().st_gid == 2
    assert (out / "z" / "f").read_text() == "hi\n"
    assert (out / "m2").read_text() == "a\n"
    assert (out / "env").read_text() == "1\n"
    assert (out / "copied").read_text() == CONTEXT["a.txt"]


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
