"""Dockerfiles built by llbkit give BuildKit v0.11.6's trees, image configs and failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.errors import UserError
from llbkit.sdk.testing.builds import build_in
from llbkit.sdk.testing.containerd import Containerd, containerd  # noqa: F401 - a fixture
from tests.dockerfiles.compare import BUILD_ARGS, SECRETS, URL_PORT, normalize_config, serve
from tests.trees.listing import tar_listing

CASES = Path(__file__).resolve().parent
VECTORS = CASES.parent / "vectors" / "dockerfiles"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "Dockerfile").exists())
#: the cases with a RUN step, which the containerd worker runs too
RUNS = [n for n in NAMES if re.search(r"^\s*RUN\b", (CASES / n / "Dockerfile").read_text(), re.M)]

pytestmark = [pytest.mark.root, pytest.mark.services]


@pytest.fixture
def base_image(busybox_image: str) -> str:
    return busybox_image


def build(
    name: str, base: str, root: Path, config: EngineConfig | None = None
) -> tuple[dict, dict] | str:
    """The tree and normalized config llbkit builds (with ``config``'s worker), or its error."""
    rich = base.replace("/library/busybox", "/library/rich")
    opts = {f"build-arg:{k}": v for k, v in {"BASE": base, "RICH": rich, **BUILD_ARGS}.items()}
    with serve(CASES) as url_base:
        opts["build-arg:URL_BASE"] = f"{url_base}/{name}/served"
        return _build(name, root, opts, url_base, config)


def _build(
    name: str, root: Path, opts: dict[str, str], url_base: str, config: EngineConfig | None
) -> tuple[dict, dict] | str:
    ctx = CASES / name
    out = root.parent / "out.tar"
    client = EmbeddedClient(
        locals={"context": ctx, "dockerfile": ctx},
        secrets={k: v.encode() for k, v in SECRETS.items()},
    )
    try:
        outcome = build_in(
            root,
            client,
            config,
            frontend="dockerfile.v0",
            frontend_opts=opts,
            exports=[("tar", {"dest": str(out)})],
        )
    except UserError as err:
        return str(err)
    # The vectors were recorded with the files served from a fixed port.
    raw = outcome.frontend_metadata["containerimage.config"].decode()
    config = json.loads(raw.replace(url_base, f"http://127.0.0.1:{URL_PORT}"))
    return tar_listing(out.read_bytes()), normalize_config(config)


@pytest.mark.parametrize("name", NAMES)
def test_same_as_buildkit(name: str, base_image: str, tmp_path: Path) -> None:
    _same_as_buildkit(name, build(name, base_image, tmp_path / "root"))


@pytest.mark.parametrize("name", RUNS)
def test_same_as_buildkit_with_the_containerd_worker(
    name: str,
    base_image: str,
    containerd: Containerd,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Every case that runs a step gives BuildKit's tree when containerd runs its steps."""
    config = EngineConfig(
        worker_name="containerd",
        worker={"address": containerd.address, "namespace": containerd.namespace},
    )
    _same_as_buildkit(name, build(name, base_image, tmp_path / "root", config))


def _same_as_buildkit(name: str, got: tuple[dict, dict] | str) -> None:
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    if "error" in expected:
        assert isinstance(got, str), f"BuildKit failed ({expected['error']}), llbkit built it"
        # The part of BuildKit's message that names the cause, without its internal ref ids.
        cause = re.sub(r"^error: failed to solve: ", "", expected["error"])
        cause = re.sub(
            r"failed to compute cache key: failed to calculate checksum of ref "
            r"\S+ ",
            "",
            cause,
        )
        # A source missing from a mounted snapshot: BuildKit names its temporary mount.
        cause = re.sub(
            r"lstat /tmp/buildkit-mount\d+(/\S*): no such file or directory",
            r'"\1": not found',
            cause,
        )
        assert cause in got
        return
    assert not isinstance(got, str), f"llbkit failed: {got}"
    tree, config = got
    assert tree == expected["tree"]
    history = [h for h in expected["history"] if h.get("comment") != "buildkit.exporter.image.v0"]
    assert config["config"] == expected["config"]
    assert config["history"] == history


def _cli(base: str, root: Path, case: str, *extra: str) -> subprocess.CompletedProcess[str]:
    ctx = CASES / case
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "llbkit.core",
            "--root",
            str(root),
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={ctx}",
            "--progress",
            "plain",
            "--opt",
            f"build-arg:BASE={base}",
            *extra,
        ],
        capture_output=True,
        text=True,
    )


def test_the_live_view_shows_the_failing_line_too(base_image: str, tmp_path: Path) -> None:
    done = _cli(base_image, tmp_path / "root", "fail_run", "--progress", "tty")
    assert done.returncode == 1
    assert "Dockerfile:4\n" in done.stderr
    assert "   4 | >>> RUN echo failing output && exit 7\n" in done.stderr
    assert done.stderr.count(" > [3/3] RUN echo failing output && exit 7:") == 1


def test_cli_shows_instructions_and_the_failing_line(base_image: str, tmp_path: Path) -> None:
    done = _cli(base_image, tmp_path / "root", "fail_run")
    assert done.returncode == 1
    assert "] RUN echo before\n" in done.stderr
    assert "Dockerfile:4\n" in done.stderr
    assert "   4 | >>> RUN echo failing output && exit 7\n" in done.stderr
    assert " > [3/3] RUN echo failing output && exit 7:\nfailing output\n" in done.stderr
    assert done.stderr.splitlines()[-1] == (
        'error: failed to solve: process "/bin/sh -c echo failing output && exit 7" did not '
        "complete successfully: exit code: 7"
    )


def test_target_builds_only_what_it_needs(base_image: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _cli(
        base_image,
        tmp_path / "root",
        "stages",
        "--opt",
        "target=builder",
        "--output",
        f"type=local,dest={out}",
    )
    assert done.returncode == 0, done.stderr
    assert (out / "out" / "artifact").read_text() == "built\n"
    assert "exit 1" not in done.stderr  # the unused stage never ran
    missing = _cli(base_image, tmp_path / "root", "stages", "--opt", "target=nosuch")
    assert missing.returncode == 1
    assert "target stage nosuch could not be found (stages: builder, unused, final)" in (
        missing.stderr
    )


def test_frontend_options_reach_run_steps(base_image: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _cli(
        base_image,
        tmp_path / "root",
        "opts_sandbox",
        "--opt",
        "filename=Dockerfile.opts",
        "--opt",
        "hostname=custom-host",
        "--opt",
        "add-hosts=myhost=10.1.2.3",
        "--opt",
        "ulimit=nofile=512:1024",
        "--output",
        f"type=local,dest={out}",
    )
    assert done.returncode == 0, done.stderr
    assert (out / "host.txt").read_text() == "custom-host\n"
    assert (out / "hosts.txt").read_text().split() == ["10.1.2.3", "myhost"]
    assert (out / "nofile.txt").read_text() == "512\n"
