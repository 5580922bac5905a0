"""copy_data: the bytes arrive, and a symlink at the destination is never written through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llbkit.core.fs.copydata import copy_data


@pytest.mark.parametrize("size", [0, 1, 3 << 20])
def test_bytes_arrive_whatever_the_size(tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(size))
    copy_data(str(src), str(tmp_path / "dst"), size)
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()


def test_a_wrong_size_hint_still_copies_everything(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"grown since it was looked at\n" * 1000)
    copy_data(str(src), str(tmp_path / "dst"), 10)
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"new")
    (tmp_path / "dst").write_bytes(b"older and longer")
    copy_data(str(tmp_path / "src"), str(tmp_path / "dst"), 3)
    assert (tmp_path / "dst").read_bytes() == b"new"


def test_a_symlink_at_the_destination_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (tmp_path / "src").write_bytes(b"evil")
    (tmp_path / "dst").symlink_to(outside)
    with pytest.raises(OSError):
        copy_data(str(tmp_path / "src"), str(tmp_path / "dst"), 4)
    assert outside.read_bytes() == b"keep"
