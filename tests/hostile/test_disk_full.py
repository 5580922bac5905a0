"""A disk that fills up during an export: one line naming the export, and the next build with
room succeeds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.cli import dockerfile_build, error_line

pytestmark = pytest.mark.root


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 5 MiB tmpfs: room for a 3 MB context's mirror (its snapshot and the COPY's layer link
    to it), not for the layer's compressed blob too."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def big_context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big /\n")
    (ctx / "big").write_bytes(os.urandom(3_000_000))  # random: compression cannot shrink it
    return ctx


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        ("oci", "exporting to oci image format"),
        ("docker", "exporting to docker image format"),
        ("tar", "exporting to client tarball"),
        ("local", "exporting to client directory"),
    ],
)
def test_a_full_destination_is_one_line(tmp_path: Path, small: Path, kind: str, step: str) -> None:
    (small / "filler").write_bytes(b"\0" * (3 << 20))
    ctx = big_context(tmp_path)
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type={kind},dest={small / 'out'}")
    assert error_line(done) == f"error: failed to solve: {step}: no space left on device"


def test_a_full_state_root_while_compressing_is_one_line_and_recovers(
    tmp_path: Path, small: Path
) -> None:
    ctx = big_context(tmp_path)
    out = tmp_path / "out.tar"
    args = ("--output", f"type=oci,dest={out}")
    done = dockerfile_build(small / "root", ctx, *args)
    line = error_line(done)
    assert line == "error: failed to solve: exporting to oci image format: no space left on device"
    subprocess.run(["mount", "-o", "remount,size=32m", str(small)], check=True)
    again = dockerfile_build(small / "root", ctx, *args)
    assert again.returncode == 0, again.stderr
    assert out.stat().st_size > 3_000_000
