"""Trees nested deeper than Python's recursion limit: a context 1,000 directories deep is
mirrored, checksummed, copied, exported and removed as BuildKit copies it (every walker keeps
its own stack); one past PATH_MAX is refused in one line, as BuildKit's sender refuses it."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.core.fs.iterative import makedirs, rmtree, walk
from llbkit.core.snapshot.layers import apply_layer, diff_trees
from llbkit.core.snapshot.untar import apply_tar
from tests.hostile.cli import dockerfile_build, error_line, llbkit

DEPTH = 1000


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory outside pytest's own: pytest removes old ones with the recursive
    ``shutil.rmtree``, which a tree this deep would fail (for every later session)."""
    path = Path(tempfile.mkdtemp(prefix="llbkit-deep-"))
    yield path
    rmtree(path, ignore_errors=True)


def nest(top: Path, depth: int) -> Path:
    """``top/deep/a/a/…/a`` (``depth`` times ``a``), made one level at a time."""
    path = str(top / "deep")
    for _ in range(depth):
        path = os.path.join(path, "a")
    makedirs(path)
    return Path(path)


def test_a_context_a_thousand_deep_is_copied_built_and_removed(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM scratch AS one\nCOPY . /\nFROM scratch\nCOPY --from=one /deep /copied\n"
    )
    (nest(ctx, DEPTH) / "leaf").write_text("bottom\n")
    root = tmp_path / "root"
    out = tmp_path / "out"
    done = dockerfile_build(root, ctx, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "copied" / ("a/" * DEPTH) / "leaf").read_text() == "bottom\n"
    # Changed at the bottom: mirrored again, and the old tree replaced by a file.
    bottom = ctx / "deep" / ("a/" * (DEPTH - 1)).rstrip("/")
    rmtree(bottom / "a")
    (bottom / "a").write_text("now a file\n")
    dest = tmp_path / "out.tar"
    done = dockerfile_build(root, ctx, "--output", f"type=tar,dest={dest}")
    assert done.returncode == 0, done.stderr
    with tarfile.open(dest) as tar:
        names = tar.getnames()
    assert "copied/" + "a/" * (DEPTH - 1) + "a" in names
    done = dockerfile_build(root, ctx, "--output", f"type=oci,dest={tmp_path / 'oci.tar'}")
    assert done.returncode == 0, done.stderr
    done = llbkit(root, "prune", "--all")
    assert done.returncode == 0, done.stderr


def test_a_context_deeper_than_path_max_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    # The path is longer than the kernel takes whole: made from inside, the test's own working
    # directory given back when it ends.
    monkeypatch.chdir(ctx)
    try:
        os.mkdir("deep")
        os.chdir("deep")
        for _ in range(2100):
            os.mkdir("a")
            os.chdir("a")
    finally:
        os.chdir(tmp_path)
    line = error_line(dockerfile_build(tmp_path / "root", ctx))
    assert line.endswith("/a") and "File name too long" in line


def test_fifos_and_sockets_are_copied_as_buildkit_copies_them(tmp_path: Path) -> None:
    """BuildKit v0.11.6 gives a FIFO as a FIFO (never opened: a build does not block on one)
    and a socket as an empty file with the socket's permissions."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    os.mkfifo(ctx / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ctx / "sock"))
    os.chmod(ctx / "sock", 0o751)
    root = tmp_path / "root"
    for output in ("local", "tar"):
        out = tmp_path / output
        done = dockerfile_build(root, ctx, "--output", f"type={output},dest={out}")
        assert done.returncode == 0, done.stderr
    local = tmp_path / "local"
    assert (local / "fifo").is_fifo() and (local / "fifo").stat().st_mode & 0o777 == 0o640
    assert (local / "sock").is_file() and (local / "sock").stat().st_size == 0
    assert (local / "sock").stat().st_mode & 0o777 == 0o751
    with tarfile.open(tmp_path / "tar") as tar:
        assert tar.getmember("fifo").isfifo()
        assert tar.getmember("sock").isfile()


def test_layers_a_thousand_deep_are_applied_and_diffed(tmp_path: Path) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("a/" * DEPTH + "leaf")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    data.seek(0)
    upper = tmp_path / "upper"
    apply_tar(data, str(upper))
    assert (upper / ("a/" * DEPTH) / "leaf").read_bytes() == b"hi"
    diff = tmp_path / "diff"
    diff.mkdir()
    diff_trees(None, upper, diff, "oci")
    merged = tmp_path / "merged"
    merged.mkdir()
    apply_layer(diff, merged, "oci")
    assert (merged / ("a/" * DEPTH) / "leaf").read_bytes() == b"hi"
    assert sum(1 for _ in walk(str(merged))) == DEPTH + 1
    for tree in (upper, diff, merged):
        rmtree(tree)
        assert not tree.exists()


def test_a_socket_a_step_left_is_not_in_its_layer_and_exported_as_a_file(
    tmp_path: Path,
) -> None:
    """A socket a RUN leaves in its tree: containerd's layer writer ignores it, and so does
    llbkit's (both were a traceback)."""
    from llbkit.core.cache.layertar import tar_layer

    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "kept").write_text("x")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(layer / "sock"))
    os.mkfifo(layer / "fifo")
    out = io.BytesIO()
    tar_layer(layer, out, "oci", None, [])
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert sorted(tar.getnames()) == ["fifo", "kept"]
        assert tar.getmember("fifo").isfifo()
    # The tar exporter gives it as BuildKit's walker does: an empty file, its permissions kept.
    from llbkit.plugins.exporter_local.exporter import _add_tree

    os.chmod(layer / "sock", 0o751)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, layer, "")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        sock = tar.getmember("sock")
        assert sock.isfile() and sock.size == 0 and sock.mode == 0o751


def test_a_local_export_gives_a_socket_as_an_empty_file(tmp_path: Path) -> None:
    """The embedded client writes a local export as BuildKit's file transfer does."""
    import anyio

    from llbkit.core.client.embedded import EmbeddedClient

    tree = tmp_path / "tree"
    tree.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "sock"))
    os.chmod(tree / "sock", 0o751)
    out = tmp_path / "out"
    anyio.run(EmbeddedClient().write_tree, str(out), tree)
    assert (out / "sock").is_file() and (out / "sock").stat().st_mode & 0o777 == 0o751


@pytest.mark.root
@pytest.mark.services
@pytest.mark.slow
def test_a_tree_a_thousand_deep_made_by_a_run_is_committed_and_exported(
    tmp_path: Path, busybox_image: str
) -> None:
    """The step's upper is measured, diffed and written as a layer at any depth."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    deep = "/deep/" + "a/" * DEPTH
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN mkdir -p {deep} && echo bottom > {deep}leaf\n"
        "FROM scratch\nCOPY --from=0 /deep /deep\n"
    )
    root = tmp_path / "root"
    out = tmp_path / "out"
    done = dockerfile_build(root, ctx, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "deep" / ("a/" * DEPTH) / "leaf").read_text() == "bottom\n"
    done = dockerfile_build(root, ctx, "--output", f"type=oci,dest={tmp_path / 'oci.tar'}")
    assert done.returncode == 0, done.stderr
    done = llbkit(root, "prune", "--all")
    assert done.returncode == 0, done.stderr


def test_an_added_archive_a_thousand_deep_is_unpacked(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nADD a.tar /x/\n")
    with tarfile.open(ctx / "a.tar", "w") as tar:
        info = tarfile.TarInfo("a/" * DEPTH + "leaf")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    out = tmp_path / "out"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=tar,dest={out}")
    assert done.returncode == 0, done.stderr[-1500:]
    with tarfile.open(out) as tar:
        assert tar.extractfile("x/" + "a/" * DEPTH + "leaf").read() == b"hi"  # type: ignore[union-attr]
