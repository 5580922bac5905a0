"""The state root: one owner, crash recovery, blobs written whole or not at all."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llbkit.core.cache.content import DigestMismatchError
from llbkit.core.cache.root import StateRoot, StateRootError, default_root


def test_blobs_round_trip_and_are_recorded(tmp_path):
    with StateRoot.open(tmp_path / "root") as root:
        digest = root.content.put(b"hello", media_type="text/plain")
        assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
        assert root.content.read(digest) == b"hello"
        assert root.content.total_size() == 5
        assert root.content.put(b"hello") == digest  # idempotent
        root.content.delete(digest)
        assert not root.content.has(digest) and root.content.total_size() == 0


def test_a_blob_that_does_not_match_its_digest_is_refused_and_not_kept(tmp_path):
    with StateRoot.open(tmp_path / "root") as root:
        wrong = "sha256:" + "0" * 64
        with (
            pytest.raises(DigestMismatchError, match="hashes to sha256:2cf24dba"),
            root.content.writer(wrong) as w,
        ):
            w.write(b"hello")
        assert not root.content.has(wrong)
        assert list((tmp_path / "root/tmp").iterdir()) == []
        assert list((tmp_path / "root/content/sha256").iterdir()) == []


def test_a_second_process_is_told_who_holds_the_root(tmp_path):
    path = tmp_path / "root"
    with StateRoot.open(path):
        code = (
            "from pathlib import Path; from llbkit.core.cache.root import StateRoot; "
            f"StateRoot.open(Path({str(path)!r}))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"state root {path} is in use by pid {os.getpid()}" in result.stderr
    with StateRoot.open(path):  # released on close
        pass


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llbkit.core.cache.root import StateRoot
    root = StateRoot.open(Path(sys.argv[1]))
    root.content.put(b"complete")
    with root.content.writer() as w:
        for _ in range(10_000):
            w.write(b"x" * 4096)
            print("writing", flush=True)
            time.sleep(0.001)
    """
)


def test_kill_9_mid_write_leaves_a_consistent_root(tmp_path):
    path = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for _ in range(20):
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((path / "tmp").iterdir()), "the half-written blob is staged in tmp/"
    with StateRoot.open(path) as root:
        assert list((path / "tmp").iterdir()) == []
        digests = [d for (d,) in root.db.conn.execute("SELECT digest FROM blobs")]
        assert digests == ["sha256:" + hashlib.sha256(b"complete").hexdigest()]
        assert [p.name for p in (path / "content/sha256").iterdir()] == [digests[0].split(":")[1]]


def test_records_never_point_at_missing_files(tmp_path):
    path = tmp_path / "root"
    with StateRoot.open(path) as root:
        digest = root.content.put(b"data")
    os.unlink(path / "content/sha256" / digest.split(":")[1])
    with StateRoot.open(path) as root:
        assert root.db.conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 0


def test_a_root_from_a_newer_llbkit_is_refused(tmp_path):
    path = tmp_path / "root"
    with StateRoot.open(path):
        pass
    db = sqlite3.connect(path / "state.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateRootError, match="written by a newer llbkit"):
        StateRoot.open(path)
    with StateRoot.open(tmp_path / "other"):  # and the failed open released its lock
        pass


def test_a_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with StateRoot.open(Path("state")) as root:
        assert root.path == tmp_path / "state"


def test_wal_mode(tmp_path):
    with StateRoot.open(tmp_path / "root") as root:
        assert root.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_root(monkeypatch):
    assert default_root({"LLBKIT_ROOT": "/x"}).as_posix() == "/x"
    if os.geteuid() == 0:
        assert default_root({}).as_posix() == "/var/lib/llbkit"
    else:
        assert default_root({"XDG_DATA_HOME": "/d"}).as_posix() == "/d/llbkit"
