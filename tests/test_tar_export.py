"""``--output type=tar`` gives the bytes BuildKit's tar exporter gives (Go's ``archive/tar``):
times rounded to whole seconds, no record padding, PAX headers named and filled as Go's.

The vector was recorded with BuildKit v0.11.6: the context below made with
``python -c 'from tests.test_tar_export import make_context; make_context("ctx")'``, then
``buildctl build --frontend dockerfile.v0 --local context=ctx --local dockerfile=ctx
--output type=tar,dest=tests/vectors/exports/context.tar`` as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VECTOR = Path(__file__).parent / "vectors" / "exports" / "context.tar"
SECOND = 10**9


def make_context(where: str | os.PathLike[str]) -> Path:
    """Entries of every kind a tar header must carry: modes, links, long and non-ASCII
    names, a time with a fraction above and below a half, and one before 1970."""
    root = Path(where)
    (root / "dir/sub").mkdir(parents=True)

    def put(name: str, data: bytes, mode: int = 0o644) -> None:
        (root / name).write_bytes(data)
        os.chmod(root / name, mode)

    put("Dockerfile", b"FROM scratch\nCOPY . /\n")
    put("a", b"hello")
    put("empty", b"")
    put("exec", b"#!/bin/sh\n", 0o755)
    put("suid", b"s", 0o4755)
    put("dir/sub/deep", b"d" * 5000)
    put("dir/" + "l" * 120, b"long")
    put("dir/\u00fcn\u00efc\u00f6d\u00e9", b"u")
    put("old", b"old")
    os.symlink("a", root / "sym")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "a", root / "hard")
    os.chmod(root / "dir/sub", 0o750)
    for top, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            when = 1_500_000_000 * SECOND + 600_000_000
            os.utime(os.path.join(top, name), ns=(when, when), follow_symlinks=False)
    os.utime(root / "old", ns=(0, -5 * SECOND + 400_000_000))
    os.utime(root / "a", ns=(0, 1_600_000_000 * SECOND + 500_000_000))
    return root


def _build(tmp_path: Path, ctx: Path, output: str) -> None:
    """An embedded Dockerfile build of ``ctx`` with one ``--output``."""
    args = ["--progress", "quiet", "--frontend", "dockerfile.v0", "--output", output]
    args += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    root = str(tmp_path / "root")
    done = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "--root", root, "build", *args], capture_output=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.root
def test_a_tarball_is_byte_for_byte_buildkits(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    out = tmp_path / "out.tar"
    _build(tmp_path, ctx, f"type=tar,dest={out}")
    assert _dir_times_blanked(out.read_bytes()) == _dir_times_blanked(VECTOR.read_bytes())


def _dir_times_blanked(tarball: bytes) -> bytes:
    """The tarball with its directories' times (and so their checksums) blanked: BuildKit's
    context transfer gives a directory the time of the transfer or its own, from one run to
    the next (the recording has one of each); every other byte is compared."""
    out = bytearray(tarball)
    at = 0
    while at + 512 <= len(out) and any(out[at : at + 512]):
        size = int(out[at + 124 : at + 136].strip(b"\0 ") or b"0", 8)
        if out[at + 156 : at + 157] == b"5":
            out[at + 136 : at + 156] = bytes(20)
        at += 512 + -(-size // 512) * 512
    return bytes(out)


def test_whole_seconds_round_as_go() -> None:
    from llbkit.core.gotar import whole_seconds

    assert whole_seconds(1_600_000_000 * SECOND + 499_999_999) == 1_600_000_000
    assert whole_seconds(1_600_000_000 * SECOND + 500_000_000) == 1_600_000_001
    assert whole_seconds(-5 * SECOND + 400_000_000) == -5  # -4.6: halves away from zero
    assert whole_seconds(-4 * SECOND - 500_000_000) == -5


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_an_image_tarball_is_laid_out_as_buildkits(tmp_path: Path, kind: str) -> None:
    """As BuildKit v0.11.6's archive exporter writes one (checked side by side with it):
    entries in name order, dated 1970, blobs read-only; ``index.json`` without a media type,
    with the manifest's platform and its annotations in key order; ``manifest.json`` in both
    formats, tags only in docker's; Go's tar headers."""
    import json
    import tarfile

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /\n")
    (ctx / "a").write_text("a\n")
    out = tmp_path / "image.tar"
    _build(tmp_path, ctx, f"type={kind},name=foo/bar:v1,dest={out}")
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    names = [m.name for m in members]
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names == sorted(names) and names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    assert {m.mtime for m in members} == {0}
    modes = {m.name: m.mode for m in members}
    assert modes["oci-layout"] == 0o444 and modes["index.json"] == modes["manifest.json"] == 0o644
    assert all(modes[n] == 0o444 for n in names if n.startswith("blobs/sha256/"))
    index = json.loads(files["index.json"])
    assert list(index) == ["schemaVersion", "manifests"]
    (top,) = index["manifests"]
    assert top["platform"] == {"architecture": "amd64", "os": "linux"}
    assert list(top["annotations"]) == sorted(top["annotations"])
    assert top["annotations"]["io.containerd.image.name"] == "docker.io/foo/bar:v1"
    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == (["foo/bar:v1"] if kind == "docker" else None)
    manifest = json.loads(files["blobs/sha256/" + top["digest"].split(":")[1]])
    assert entry["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
    # Go's headers: device fields of zeros, and nothing after the two end blocks.
    raw = out.read_bytes()
    assert raw.endswith(bytes(1024)) and not raw.endswith(bytes(1536))
    assert raw[329:345] == b"0000000\x000000000\x00"
    # Its layer tar is Go's as well: whole-second times, so no PAX record before an entry.
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    import gzip

    plain = gzip.decompress(layer)
    assert plain[156:157] == b"0" and plain[:2] == b"a\x00"
    assert plain.endswith(bytes(1024)) and len(plain) == 2 * 512 + 1024  # a, its data, the end
