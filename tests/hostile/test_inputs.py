"""Hostile contexts, archives and options: each is built as BuildKit builds it, or refused in
one line, never a traceback."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.hostile.cli import dockerfile_build, error_line


def context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_an_added_tar_whose_hardlink_names_no_member_is_one_line(tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nADD a.tar /x/\n")
    with tarfile.open(ctx / "a.tar", "w") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.LNKTYPE, "missing"
        tar.addfile(link)
    line = error_line(dockerfile_build(tmp_path / "root", ctx))
    assert line.endswith("ADD a.tar /x/: unpack a.tar to /x/: linkname 'missing' not found")


def test_a_context_file_whose_name_is_not_utf8_is_copied(tmp_path: Path) -> None:
    """BuildKit copies such a name byte for byte, as Linux allows it."""
    ctx = context(tmp_path, "FROM scratch\nCOPY . /\n")
    name = os.fsdecode(b"caf\xe9-\xff")
    (ctx / name).write_bytes(b"latin-1")
    out = tmp_path / "out"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / name).read_bytes() == b"latin-1"
    tar_out = tmp_path / "out.tar"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=tar,dest={tar_out}")
    assert done.returncode == 0, done.stderr
    with tarfile.open(tar_out) as tar:
        assert name in tar.getnames()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("compression-level=999", "compression-level=999: gzip levels are -1 (its default) to 9"),
        ("compression-level=ten", "compression-level='ten' is not a number"),
    ],
)
def test_a_compression_level_the_compressor_refuses_is_one_line(
    tmp_path: Path, options: str, message: str
) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    dest = tmp_path / "out.tar"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=oci,dest={dest},{options}")
    assert error_line(done).endswith(message)
    assert not dest.exists()


def test_zstd_takes_any_level_as_buildkit_does(tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    dest = tmp_path / "out.tar"
    options = "compression=zstd,compression-level=999"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=oci,dest={dest},{options}")
    assert done.returncode == 0, done.stderr
    with tarfile.open(dest) as tar:
        blobs = [m for m in tar.getmembers() if m.name.startswith("blobs/")]
        data = [tar.extractfile(m).read() for m in blobs if m.isfile()]  # type: ignore[union-attr]
    assert any(d.startswith(b"\x28\xb5\x2f\xfd") for d in data)  # a zstd frame


def test_a_cache_export_level_is_checked_too(tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    cache = f"type=local,dest={tmp_path / 'cache'},compression-level=10"
    line = error_line(dockerfile_build(tmp_path / "root", ctx, "--export-cache", cache))
    assert line.endswith("compression-level=10: gzip levels are -1 (its default) to 9")


@pytest.mark.parametrize("length", [243, 255])
def test_names_up_to_name_max_are_synced_again_when_they_change(
    tmp_path: Path, length: int
) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY . /\n")
    name, link, hard = "f" * length, "l" * length, "h" * length
    (ctx / name).write_text("first")
    os.link(ctx / name, ctx / hard)
    out = tmp_path / "out"
    args = ("--output", f"type=local,dest={out}")
    assert dockerfile_build(tmp_path / "root", ctx, *args).returncode == 0
    (ctx / name).unlink()
    (ctx / name).write_text("second")  # the mirror replaces its copy: a temporary beside it
    (ctx / link).symlink_to(name)
    done = dockerfile_build(tmp_path / "root", ctx, *args)
    assert done.returncode == 0, done.stderr
    assert (out / name).read_text() == "second"
    assert os.readlink(out / link) == name
    assert (out / hard).read_text() == "first"


def test_a_frontend_option_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nARG A\nRUN echo $A\n")
    line = error_line(dockerfile_build(tmp_path / "root", ctx, "--opt", "build-arg:A=\udcff"))
    assert line == "error: --opt 'build-arg:A=\ufffd': not UTF-8 (a frontend's options are text)"


def test_a_dockerignore_pattern_with_many_wildcards_takes_linear_time(tmp_path: Path) -> None:
    """Python's re backtracks where Go's regexp does not: ``*a*a*a*a*a*a*a*a*c`` against a
    name of 200 ``a`` never finished (a build that hangs from one line of a cloned repo's
    .dockerignore); BuildKit matches it at once."""
    ctx = context(tmp_path, "FROM scratch\nCOPY . /\n")
    (ctx / ".dockerignore").write_text("*a*a*a*a*a*a*a*a*c\n**/x/**/y/**/*.tmp\n")
    (ctx / ("a" * 200)).write_text("kept")
    (ctx / ("a" * 199 + "c")).write_text("ignored")
    nested = ctx / "x" / "1" / "y" / "2"
    nested.mkdir(parents=True)
    (nested / "f.tmp").write_text("ignored")
    (nested / "f.txt").write_text("kept")
    out = tmp_path / "out"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / ("a" * 200)).read_text() == "kept"
    assert not (out / ("a" * 199 + "c")).exists()
    assert (out / "x/1/y/2/f.txt").exists() and not (out / "x/1/y/2/f.tmp").exists()
