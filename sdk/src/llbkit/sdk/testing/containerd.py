"""A real containerd for tests: its own root, state and socket in a temporary folder.

Debian's containerd (with the runc v2 shim) runs as root. The shim keeps some state under
``/run/containerd`` whatever the config says, so each test run uses a namespace of its own.

    from llbkit.sdk.testing.containerd import containerd  # a session fixture, used by name
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Containerd", "containerd", "running_containerd"]

_CONFIG = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[debug]
  address = "{dir}/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"""


@dataclass(frozen=True)
class Containerd:
    """A running containerd: its socket and a namespace no other run uses."""

    address: str
    namespace: str

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ctr`` against this containerd, in its namespace."""
        command = ["ctr", "--address", self.address, "-n", self.namespace, *args]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running_containerd() -> Iterator[Containerd]:
    """Start containerd in a fresh folder; stop it and remove the folder at the end."""
    folder = Path(tempfile.mkdtemp(prefix="llbkit-containerd-"))
    (folder / "config.toml").write_text(_CONFIG.format(dir=folder))
    log = open(folder / "containerd.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(
        ["containerd", "--config", str(folder / "config.toml")], stdout=log, stderr=log
    )
    found = Containerd(str(folder / "containerd.sock"), f"llbkit-test-{os.getpid()}")
    try:
        deadline = time.monotonic() + 30
        while found.ctr("version").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "containerd did not start: " + (folder / "containerd.log").read_text()[-2000:]
                )
            time.sleep(0.05)
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(folder)], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """A containerd for the session; skips, saying why, where it cannot run."""
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install containerd)")
    if os.geteuid() != 0:
        pytest.skip("containerd runs as root")
    with running_containerd() as found:
        yield found
