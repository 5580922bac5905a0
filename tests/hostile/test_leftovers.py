"""``kill -9`` of the engine during a ``RUN``: the next engine to take the state root (an
embedded build of any kind, or ``prune``) stops the container it left, says so, and no mount
of the build is left."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.hostile.cli import LLBKIT

pytestmark = [pytest.mark.root, pytest.mark.services, pytest.mark.slow]

MARK = "987654"  # the sleep's length: how its process is told from any other


def _sleepers() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\0" + MARK.encode() + b"\0":
                found.append(int(pid))
    return found


def _mounts(root: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(root) in line]


def _secrets(value: bytes) -> list[Path]:
    """The private directories holding a secret of this value (a build's, on tmpfs)."""
    found = []
    for base in (Path("/dev/shm"), Path(tempfile.gettempdir())):
        for holder in base.glob("llbkit-secret-*"):
            with contextlib.suppress(OSError):
                if (holder / "secret").read_bytes() == value:
                    found.append(holder)
    return found


def _build(root: Path, ctx: Path) -> subprocess.Popen[bytes]:
    local = ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    local += ["--secret", f"id=s,src={ctx / 'secret'}"]
    return subprocess.Popen(
        [*LLBKIT, "--root", str(root), "build", "--frontend", "dockerfile.v0", *local],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("then", ["prune", "build"])
def test_the_next_engine_stops_what_a_killed_one_left(
    tmp_path: Path, busybox_image: str, then: str
) -> None:
    root, ctx = tmp_path / "root", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN --mount=type=secret,id=s sleep {MARK}\n"
    )
    value = os.urandom(16).hex().encode()
    (ctx / "secret").write_bytes(value)
    engine = _build(root, ctx)
    left: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (left := _sleepers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left, "the RUN never started"
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        time.sleep(0.5)
        assert _sleepers() == left  # what a SIGKILL cannot stop: the container runs on
        assert _secrets(value) and _mounts(root)  # nor its secret, nor its rootfs's mount
        if then == "prune":
            args = ["prune"]
        else:  # a build that runs no process: the worker is not otherwise started
            (ctx / "Dockerfile").write_text("FROM scratch\nLABEL a=b\n")
            args = ["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
            args += ["--local", f"dockerfile={ctx}"]
        done = subprocess.run(
            [*LLBKIT, "--root", str(root), *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "llbkit: stopped 1 container(s) a killed build left running: " in done.stderr
        cleaned = "llbkit: cleaned up what a killed build left: unmounted "
        assert cleaned in done.stderr and "removed " in done.stderr
        deadline = time.monotonic() + 10
        while _sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _sleepers() == []
        assert _mounts(root) == []
        assert _secrets(value) == []
    finally:
        for holder in _secrets(value):  # only this test's secret
            shutil.rmtree(holder, ignore_errors=True)
        for pid in left:  # only the processes this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if engine.poll() is None:
            engine.kill()


def _left_behind(root: Path) -> tuple[Path, Path]:
    """What a build killed between mounting a step's rootfs and starting its container
    leaves: the mount under the root's ``tmp/``, and a recorded secret directory."""
    from llbkit.core.cache.root import StateRoot, record_outside
    from llbkit.core.snapshot.mount import mount_overlay

    StateRoot.open(root).close()
    stage = root / "tmp" / "stage"
    for name in ("l1", "l2", "m"):
        (stage / name).mkdir(parents=True)
    mount_overlay(stage / "m", [stage / "l2", stage / "l1"])
    holder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="llbkit-secret-"))
    record_outside(root / "tmp", holder)
    return stage / "m", holder


def _clean(point: Path, holder: Path) -> None:
    shutil.rmtree(holder, ignore_errors=True)
    if any(str(point) in line for line in Path("/proc/mounts").read_text().splitlines()):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_mount_made_before_its_container_started_is_reaped(tmp_path: Path) -> None:
    """A kill between mounting a step's rootfs and starting its container: no container to
    stop, the mount alone is found (every mount is made under the root's ``tmp/``)."""
    from llbkit.core.cache.root import StateRoot

    root = tmp_path / "root"
    point, holder = _left_behind(root)
    try:
        assert _mounts(root)
        with StateRoot.open(root) as opened:
            assert opened.recovered == [f"unmounted {point}", f"removed {holder}"]
        assert _mounts(root) == [] and not holder.exists()
    finally:
        _clean(point, holder)


def test_the_daemon_reaps_at_start_and_says_so(tmp_path: Path) -> None:
    from tests.test_daemon import daemon

    root = tmp_path / "root"
    point, holder = _left_behind(root)
    try:
        with daemon(root) as (_, proc):
            assert _mounts(root) == [] and not holder.exists()
        said = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert f"llbkitd: cleaned up what a killed daemon left: unmounted {point}" in said
        assert f"removed {holder}" in said
    finally:
        _clean(point, holder)
