"""``kill -9`` in the middle of a build: the next build succeeds and ``du`` agrees with the disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import disk_usage
from llbkit.sdk import llb

LLBKIT = [sys.executable, "-m", "llbkit.core"]


def chain(n: int) -> bytes:
    state = llb.scratch()
    for i in range(n):
        state = state.file(llb.mkfile(f"/f{i:03d}", 0o644, f"{i}\n".encode()))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()


def _disk(path: Path) -> int:
    """Blocks really used below ``path`` (each inode once), as ``du`` counts them."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def interrupt(root: Path, data: bytes, sig: int, after: int) -> tuple[int, str]:
    """Start a build, send ``sig`` once ``after`` vertices completed; return its exit code and
    the rest of its error output."""
    proc = subprocess.Popen(
        [*LLBKIT, "--root", str(root), "build", "--progress", "rawjson"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(data)
    proc.stdin.close()
    done = 0
    for line in proc.stderr:
        if not line.startswith(b"{"):
            continue
        status = json.loads(line)
        done += sum(1 for v in status.get("vertexes", []) if v.get("completed"))
        if done >= after:
            os.kill(proc.pid, sig)
            break
    rest = proc.stderr.read().decode()
    proc.wait()
    return proc.returncode, rest


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [5, 60, 150])
def test_kill_9_mid_build_then_build_again(tmp_path: Path, kill_after: int) -> None:
    root = tmp_path / "root"
    data = chain(200)
    code, _ = interrupt(root, data, signal.SIGKILL, kill_after)
    assert code == -signal.SIGKILL

    again = subprocess.run(
        [
            *LLBKIT,
            "--root",
            str(root),
            "build",
            "--progress",
            "plain",
            "-o",
            f"type=local,dest={tmp_path / 'out'}",
        ],
        input=data,
        capture_output=True,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert len(os.listdir(tmp_path / "out")) == 200
    if kill_after >= 60:
        assert "CACHED" in again.stderr.decode()  # the work done before the kill was kept

    with Store.open(root) as store:
        total = sum(r.size for r in disk_usage(store))
        layers = sorted(store.layers_dir.iterdir())
        rows = {r[0] for r in store.db.conn.execute("SELECT id FROM layers")}
        assert {int(p.name) for p in layers} == rows
        for (chain_json,) in store.db.conn.execute("SELECT chain FROM results"):
            assert all(store.layer_path(layer).is_dir() for layer in json.loads(chain_json))
        # Everything below layers/ (not that directory itself), hardlinks counted once.
        assert total == _disk(store.layers_dir)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_build_and_leaves_the_store_usable(tmp_path: Path, sig: int) -> None:
    """Ctrl-C, or SIGTERM (``kill``, a CI runner's stop), cancels the build."""
    root = tmp_path / "root"
    data = chain(300)
    code, rest = interrupt(root, data, sig, 30)
    assert code == 130
    assert rest.rstrip().endswith("error: canceled")
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    again = subprocess.run(
        [*LLBKIT, "--root", str(root), "build", "--progress", "plain"],
        input=data,
        capture_output=True,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert "CACHED" in again.stderr.decode()
