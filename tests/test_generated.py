"""Generated files are committed; these tests fail when they no longer match their sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PB = ROOT / "core/src/llbkit/core/llb/_pb"


def test_protobuf_modules_match_ops_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates _pb")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
    for name in ("ops_pb2.py", "ops_pb2.pyi"):
        fresh = (tmp_path / "llbkit/core/llb/_pb" / name).read_text()
        assert fresh == (PB / name).read_text(), f"{name} is stale: run scripts/gen_proto.sh"


def test_generated_files_say_how_to_regenerate():
    for path in (
        PB / "ops_pb2.py",
        PB / "ops_pb2.pyi",
        ROOT / "core/src/llbkit/core/plugins/_known.py",
    ):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# GENERATED FILE - DO NOT EDIT; regenerate with scripts/"), path
