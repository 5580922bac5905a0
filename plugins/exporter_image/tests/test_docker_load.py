"""A docker tarball is accepted by a real ``docker load``, and the image runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[3] / "examples" / "app"

pytestmark = [pytest.mark.root, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """dockerd (Debian's docker.io) on a private socket, without touching the host's setup."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io)")
    base = tmp_path_factory.mktemp("dockerd")
    sock = base / "docker.sock"
    proc = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{sock}",
            "--data-root",
            str(base / "data"),
            "--exec-root",
            str(base / "exec"),
            "--pidfile",
            str(base / "pid"),
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = [shutil.which("docker") or "docker", "-H", f"unix://{sock}"]
    deadline = time.monotonic() + 30
    while subprocess.run([*client, "version"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.skip("dockerd did not start here")
        time.sleep(0.2)
    yield client
    proc.terminate()
    proc.wait(30)


def test_docker_load_and_run(busybox_image: str, docker: list[str], tmp_path: Path) -> None:
    out = tmp_path / "app-docker.tar"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "llbkit.core",
            "--root",
            str(tmp_path / "root"),
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={APP}",
            "--local",
            f"dockerfile={APP}",
            "--opt",
            f"build-arg:BASE={busybox_image}",
            "--progress",
            "quiet",
            "--output",
            f"type=docker,dest={out},name=example/app:loaded",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    loaded = subprocess.run([*docker, "load", "-i", str(out)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image: example/app:loaded" in loaded.stdout
    ran = subprocess.run(
        [*docker, "run", "--rm", "--network", "none", "example/app:loaded"],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "built from: hello from llbkit\n"
