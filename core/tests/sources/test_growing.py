"""A file read while it is written: the reader gets every byte, in order, waiting for what
is not written yet; a download that fails wakes it with the failure."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from llbkit.core.sources.growing import DownloadFailed, GrowingFile


def _write_slowly(path: Path, growing: GrowingFile, pieces: list[bytes], *, fail: bool) -> None:
    with open(path, "ab") as out:
        written = 0
        for piece in pieces:
            time.sleep(0.01)
            out.write(piece)
            out.flush()
            written += len(piece)
            growing.grew(written)
    growing.end(failed=fail)


def test_a_reader_gets_the_whole_file_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.touch()
    growing = GrowingFile(str(path))
    pieces = [os.urandom(n) for n in (1, 3, 5000, 70_000, 2 << 20, 10)]
    writer = threading.Thread(
        target=_write_slowly, args=(path, growing, pieces), kwargs={"fail": False}
    )
    writer.start()
    with growing.reader() as reader:
        assert reader.peek(4)[:4] == pieces[0] + pieces[1]  # waits for a few bytes at least
        got = reader.read()
    writer.join()
    growing.close()
    assert got == b"".join(pieces)
    assert not growing.failed()


def test_a_failed_download_wakes_its_reader(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.touch()
    growing = GrowingFile(str(path))
    writer = threading.Thread(
        target=_write_slowly, args=(path, growing, [b"x" * 10_000]), kwargs={"fail": True}
    )
    writer.start()
    with growing.reader() as reader, pytest.raises(DownloadFailed):
        reader.read()
    writer.join()
    growing.close()
    assert growing.failed()
