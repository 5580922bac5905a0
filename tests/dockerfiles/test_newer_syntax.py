"""Syntax newer than BuildKit v0.11.6's stable channel: ``COPY --exclude``, ``ADD --checksum``."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.errors import UserError
from llbkit.sdk.testing.builds import build_in
from tests.dockerfiles.compare import serve


def solve(ctx: Path, root: Path, export: tuple[str, dict[str, str]], **opts: str) -> None:
    """Build the Dockerfile in ``ctx`` through the engine's Python API, then export it."""
    build_in(
        root,
        EmbeddedClient(locals={"context": ctx, "dockerfile": ctx}),
        frontend="dockerfile.v0",
        frontend_opts=opts,
        exports=[export],
    )


def build(ctx: Path, root: Path, out: Path, **opts: str) -> None:
    solve(ctx, root, ("local", {"dest": str(out)}), **opts)


def tar_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_copy_exclude(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for name in ("keep.py", "skip.pyc", "notes.md"):
        (ctx / "src" / name).write_text(name)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY --exclude=*.pyc --exclude=*.md src/ /app/\n"
    )
    build(ctx, tmp_path / "root", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "app").iterdir()) == ["keep.py"]


def test_add_checksum(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "tool").write_bytes(b"payload\n")
    good = "sha256:" + hashlib.sha256(b"payload\n").hexdigest()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with serve(served) as base:
        (ctx / "Dockerfile").write_text(
            f"FROM scratch\nARG SUM\nADD --checksum=$SUM {base}/tool /bin/tool\n"
        )
        build(ctx, tmp_path / "root", tmp_path / "out", **{"build-arg:SUM": good})
        assert (tmp_path / "out" / "bin" / "tool").read_bytes() == b"payload\n"
        bad = "sha256:" + "0" * 64
        with pytest.raises(UserError, match="digest mismatch"):
            build(ctx, tmp_path / "root2", tmp_path / "out2", **{"build-arg:SUM": bad})


def test_copy_parents_and_symbolic_chmod(tmp_path: Path) -> None:
    import os

    ctx = tmp_path / "ctx"
    for rel in ("a/x/one.txt", "a/y/two.txt", "a/y/skip.md", "base/keep/deep/f.txt"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    os.chmod(ctx / "a" / "x" / "one.txt", 0o640)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY --parents a/*/*.txt /p/\n"
        "COPY --parents base/./keep/deep/f.txt /pivot/\n"
        "COPY --chmod=u+x,o+r a/x/one.txt /modes/one.txt\n"
    )
    out = tmp_path / "out"
    build(ctx, tmp_path / "root", out)
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["modes/one.txt", "p/a/x/one.txt", "p/a/y/two.txt", "pivot/keep/deep/f.txt"]
    assert (out / "modes" / "one.txt").stat().st_mode & 0o777 == 0o744


def test_bad_symbolic_chmod_is_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY --chmod=u+q f /f\n")
    with pytest.raises(UserError, match="invalid chmod parameter 'u\\+q'"):
        build(ctx, tmp_path / "root", tmp_path / "out")


def test_add_a_git_repository_and_copy_refusals(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "PATH": "/usr/bin:/bin",
    }

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (work / "docs").mkdir()
    (work / "docs" / "readme.txt").write_text("from git\n")
    git("add", ".")
    git("commit", "-qm", "one")
    served = tmp_path / "served"
    served.mkdir()
    # A bare copy with the files the "dumb" HTTP protocol reads.
    git("clone", "-q", "--bare", str(work), str(served / "repo.git"), cwd=tmp_path)
    git("update-server-info", cwd=served / "repo.git")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with serve(served) as base:
        (ctx / "Dockerfile").write_text(f"FROM scratch\nADD {base}/repo.git#main:docs /d/\n")
        build(ctx, tmp_path / "root", tmp_path / "out")
        assert (tmp_path / "out" / "d" / "readme.txt").read_text() == "from git\n"
        (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY {base}/repo.git /d/\n")
        with pytest.raises(UserError, match="source can't be a git ref for COPY"):
            build(ctx, tmp_path / "root2", tmp_path / "out2")
        (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY {base}/file.txt /d/\n")
        with pytest.raises(UserError, match="source can't be a URL for COPY"):
            build(ctx, tmp_path / "root3", tmp_path / "out3")


def test_multi_platform_build_gives_an_index(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("content\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nARG TARGETARCH\nARG BUILDARCH\n"
        "COPY f.txt /file-$TARGETARCH-from-$BUILDARCH\n"
    )
    opts = {"platform": "linux/amd64,linux/arm64"}
    build(ctx, tmp_path / "root", tmp_path / "split", **opts)
    found = sorted(
        str(p.relative_to(tmp_path / "split"))
        for p in (tmp_path / "split").rglob("*")
        if p.is_file()
    )
    assert found == ["linux_amd64/file-amd64-from-amd64", "linux_arm64/file-arm64-from-amd64"]
    out = tmp_path / "multi.tar"
    solve(ctx, tmp_path / "root2", ("oci", {"dest": str(out)}), **opts)
    files = tar_files(out)
    top = json.loads(files["index.json"])["manifests"][0]
    assert top["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads(files["blobs/sha256/" + top["digest"][7:]])
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    assert platforms == ["amd64", "arm64"]
    for entry in index["manifests"]:
        manifest = json.loads(files["blobs/sha256/" + entry["digest"][7:]])
        config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
        assert config["architecture"] == entry["platform"]["architecture"]


def test_annotations_reach_their_documents(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    out = tmp_path / "a.tar"
    attrs = {
        "dest": str(out),
        "annotation.org.example.m": "m",
        "annotation-index.org.example.i": "i",
        "annotation-manifest-descriptor[linux/arm64].org.example.d": "arm",
        "annotation-index-descriptor.org.example.x": "x",
    }
    solve(ctx, tmp_path / "root", ("oci", attrs), platform="linux/amd64,linux/arm64")
    files = tar_files(out)
    top = json.loads(files["index.json"])["manifests"][0]
    assert top["annotations"]["org.example.x"] == "x"
    index = json.loads(files["blobs/sha256/" + top["digest"][7:]])
    assert index["annotations"] == {"org.example.i": "i"}
    amd, arm = index["manifests"]
    assert "annotations" not in amd and arm["annotations"] == {"org.example.d": "arm"}
    manifest = json.loads(files["blobs/sha256/" + amd["digest"][7:]])
    assert manifest["annotations"] == {"org.example.m": "m"}
