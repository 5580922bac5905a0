"""Generated files are committed; these tests fail when they no longer match their sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PB = ROOT / "core/src/llbkit/core/llb/_pb"
API = ROOT / "core/src/llbkit/core/api/_pb"
SOURCES = ROOT / "core/src"


def _generated() -> list[Path]:
    return sorted([*PB.glob("*_pb2*.py*"), *API.glob("*_pb2*.py*")])


def test_protobuf_modules_match_their_protos(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates _pb")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert fresh == [p.relative_to(SOURCES) for p in _generated()]
    for name in fresh:
        assert (tmp_path / name).read_text() == (SOURCES / name).read_text(), (
            f"{name} is stale: run scripts/gen_proto.sh"
        )


def test_generated_files_say_how_to_regenerate():
    for path in (*_generated(), ROOT / "core/src/llbkit/core/plugins/_known.py"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# GENERATED FILE - DO NOT EDIT; regenerate with scripts/"), path


def test_containerd_modules_match_debians_protos(tmp_path):
    """The containerd worker's client, generated from the .proto files Debian ships."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates _pb")
    api = Path("/usr/share/gocode/src/github.com/containerd/containerd/api")
    if not api.is_dir():
        pytest.skip("apt-get install golang-github-containerd-containerd-dev (setup.sh does)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_containerd_proto.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    committed = ROOT / "plugins/worker_containerd/src"

    def modules(root: Path) -> list[Path]:
        return sorted(
            p.relative_to(root) for p in root.rglob("*_pb2*") if p.suffix in (".py", ".pyi")
        )

    fresh = modules(tmp_path)
    assert fresh == modules(committed)
    for name in fresh:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run scripts/gen_containerd_proto.py"
        )
