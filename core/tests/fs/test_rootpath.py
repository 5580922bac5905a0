"""Paths resolve inside the root, whatever ``..`` and symlinks say."""

from __future__ import annotations

import os

import pytest

from llbkit.core.fs.rootpath import SymlinkLoopError, resolve_in_root


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "usr/lib").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink("/etc", r / "abs-etc")  # absolute: means the root's /etc
    os.symlink("../../etc", r / "usr/lib/rel-etc")
    os.symlink("/../../../../etc/passwd", r / "escape")
    os.symlink("usr/lib/rel-etc/passwd", r / "chain")
    os.symlink("loop-b", r / "loop-a")
    os.symlink("loop-a", r / "loop-b")
    (r / "file").write_text("x")
    return r


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "etc/passwd"),
        ("etc/../etc/./passwd", "etc/passwd"),
        ("/../../../etc/passwd", "etc/passwd"),
        ("/abs-etc/passwd", "etc/passwd"),
        ("/usr/lib/rel-etc/passwd", "etc/passwd"),
        ("/escape", "etc/passwd"),
        ("/chain", "etc/passwd"),
        ("/missing/dir/file", "missing/dir/file"),
        ("/abs-etc/new-file", "etc/new-file"),
        ("/file/below-a-file", "file/below-a-file"),
        ("/", ""),
    ],
)
def test_resolves_inside_the_root(root, path, expected):
    assert resolve_in_root(root, path) == (root / expected if expected else root)


def test_final_symlink_can_be_kept(root):
    assert resolve_in_root(root, "/abs-etc", follow_last=False) == root / "abs-etc"
    assert resolve_in_root(root, "/usr/lib/rel-etc/../x", follow_last=False) == root / "x"


def test_loops_are_refused_in_one_line(root):
    with pytest.raises(
        SymlinkLoopError, match="too many levels of symbolic links resolving '/loop-a/x'"
    ):
        resolve_in_root(root, "/loop-a/x")


def test_never_leaves_the_root_even_with_host_symlinks(root, tmp_path):
    (tmp_path / "secret").write_text("host")
    os.symlink(str(tmp_path / "secret"), root / "hostlink")
    resolved = resolve_in_root(root, "/hostlink")
    assert resolved == root / str(tmp_path / "secret").lstrip("/")
    assert str(resolved).startswith(str(root))
