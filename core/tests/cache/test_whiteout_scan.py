"""A committed layer's whiteouts are found from its entries' types, as a full walk finds them."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from llbkit.core.snapshot.layers import (
    OPAQUE_XATTR,
    has_whiteouts,
    is_opaque,
    is_whiteout,
    make_whiteout,
)

FORMATS = ("overlay", "oci", "plain")


def walked(path: Path, fmt: str) -> bool:
    """The reference: a stat of every entry below the root, each asked whether it is a
    whiteout or an opaque directory."""
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(top, name)
            st = os.lstat(entry)
            if is_whiteout(entry, st, fmt):
                return True
            if stat.S_ISDIR(st.st_mode) and is_opaque(entry, fmt):
                return True
    return False


def _tree(root: Path) -> Path:
    """A layer's ordinary entries, a few levels deep: files, a symlink, a fifo, a hard link."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "file").write_text("x")
    (root / "a" / "link").symlink_to("b/c/file")
    os.link(root / "a" / "b" / "c" / "file", root / "a" / "hard")
    os.mkfifo(root / "a" / "b" / "fifo")
    (root / "top").write_text("y")
    return root


def _whiteout_deep(root: Path, fmt: str) -> None:
    make_whiteout(str(root / "a" / "b" / "c"), "gone", fmt)


def _opaque_deep(root: Path, fmt: str) -> None:
    if fmt == "overlay":
        try:
            os.setxattr(root / "a" / "b", OPAQUE_XATTR, b"y")
        except OSError:
            pytest.skip("trusted.* xattrs need CAP_SYS_ADMIN")
    else:
        (root / "a" / "b" / ".wh..wh..opq").write_text("")


def _device(root: Path, fmt: str) -> None:
    """A real character device (not a 0/0 whiteout): a file of the layer like any other."""
    try:
        os.mknod(root / "a" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")


def _whiteout_like_directory(root: Path, fmt: str) -> None:
    (root / "a" / ".wh.dir").mkdir()


def _nothing(root: Path, fmt: str) -> None:
    pass


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "change",
    [_nothing, _whiteout_deep, _opaque_deep, _device, _whiteout_like_directory],
    ids=lambda f: f.__name__.strip("_"),
)
def test_the_scan_answers_as_the_walk(
    tmp_path: Path, fmt: str, change: Callable[[Path, str], None]
) -> None:
    if fmt == "plain" and change in (_whiteout_deep, _opaque_deep):
        pytest.skip("a plain tree has no whiteouts to write")
    root = _tree(tmp_path / "layer")
    change(root, fmt)
    found = walked(root, fmt)
    assert has_whiteouts(root, fmt) == found
    if change in (_whiteout_deep, _opaque_deep):
        assert found  # the cases are not vacuous
    if change in (_nothing, _device):
        assert not found


def test_the_root_being_opaque_is_not_a_whiteout(tmp_path: Path) -> None:
    """A layer's own root is marked opaque by some makers; it hides nothing below the layer."""
    root = _tree(tmp_path / "layer")
    try:
        os.setxattr(root, OPAQUE_XATTR, b"y")
    except OSError:
        pytest.skip("trusted.* xattrs need CAP_SYS_ADMIN")
    assert not has_whiteouts(root, "overlay")
    assert not walked(root, "overlay")
