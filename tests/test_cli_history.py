"""``llbkit history ls|inspect|rm``, ``debug logs`` and ``debug info`` as a user runs them,
embedded: a subprocess over a real state root, after real builds."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from llbkit.core import __version__
from llbkit.sdk import llb
from tests.test_cli_build import LLBKIT, definition, llbkit, simple


def _refs(root: Path) -> list[str]:
    listed = llbkit(root, "history", "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line)["ref"] for line in listed.stdout.decode().splitlines()]


def _one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1, done
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err.strip()


def test_history_lists_inspects_and_deletes_builds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert llbkit(root, "build", stdin=simple()).returncode == 0
    assert llbkit(root, "build", stdin=simple()).returncode == 0  # cached
    failing = definition(llb.scratch().file(llb.mkfile("/missing/dir/f", 0o644, b"")))
    assert llbkit(root, "build", stdin=failing).returncode == 1
    failed, cached, first = _refs(root)  # newest first

    table = llbkit(root, "history", "ls").stdout.decode().splitlines()
    assert re.split(r"\s{2,}", table[0]) == [
        "BUILD ID",
        "FRONTEND",
        "STATUS",
        "CREATED AT",
        "DURATION",
        "CACHED/TOTAL",
    ]
    rows = [re.split(r"\s{2,}", line) for line in table[1:]]
    assert [r[0] for r in rows] == [failed, cached, first]
    assert [r[1] for r in rows] == ["llb"] * 3
    assert [r[2] for r in rows] == ["Error", "Completed", "Completed"]
    assert all(r[3].endswith(" ago") and re.fullmatch(r"\d+\.\ds", r[4]) for r in rows), rows
    # A rebuild lists each step cached, as BuildKit does (below the last step too), but
    # the one without inputs, which it shows done.
    assert [r[5] for r in rows[1:]] == ["1/2", "0/2"]

    pretty = llbkit(root, "history", "inspect", first)
    assert pretty.returncode == 0, pretty.stderr
    lines = [re.split(r"\t+", line) for line in pretty.stdout.decode().splitlines()]
    assert ["Ref:", first] in lines
    assert ["Frontend:", "llb (a definition given directly)"] in lines
    assert ["Status:", "Completed"] in lines
    assert ["Build Steps:", "2/2 (0% cached)"] in lines
    shown = llbkit(root, "history", "inspect", failed).stdout.decode()
    assert re.search(r"^Error:\t+failed to solve: mkfile /missing/dir/f", shown, re.M), shown
    assert re.search(r"^Status:\t+Error$", shown, re.M), shown
    record = json.loads(llbkit(root, "history", "inspect", "--format", "json", cached).stdout)
    assert record["ref"] == cached and record["error"] == ""
    assert (record["num_total_steps"], record["num_cached_steps"]) == (2, 1)
    assert record["completed_at"] >= record["created_at"]

    removed = llbkit(root, "history", "rm", first)
    assert removed.returncode == 0, removed.stderr
    assert _refs(root) == [failed, cached]
    assert not (root / "history" / f"{first}.jsonl").exists()
    for args in (("debug", "logs", first), ("history", "inspect", first), ("history", "rm", first)):
        assert _one_line_error(llbkit(root, *args)) == f"error: no build {first} in the history"


@pytest.mark.parametrize(
    "args",
    [("debug", "logs", "../up"), ("history", "inspect", "a/b"), ("history", "rm", ".hidden")],
)
def test_a_malformed_ref_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    message = _one_line_error(llbkit(tmp_path / "root", *args))
    assert message.startswith(f"error: invalid build ref {args[-1]!r}"), message


def test_debug_logs_prints_the_build_as_plain_progress_showed_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    built = llbkit(root, "build", "--progress", "plain", stdin=simple())
    assert built.returncode == 0, built.stderr
    (ref,) = _refs(root)
    logs = llbkit(root, "debug", "logs", ref)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.decode() == built.stderr.decode()
    assert "#2 mkfile /hello\n#2 DONE" in logs.stdout.decode()
    raw = llbkit(root, "debug", "logs", "--progress", "rawjson", ref)
    statuses = [json.loads(line) for line in raw.stdout.decode().splitlines()]
    names = {v["name"] for s in statuses for v in s.get("vertexes", [])}
    assert names == {"mkdir /etc, mkfile /etc/app.conf", "mkfile /hello"}


def test_debug_info_says_what_answers_as_buildctl_does(tmp_path: Path) -> None:
    shown = llbkit(tmp_path / "root", "debug", "info")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode() == f"BuildKit: llbkit {__version__} \n"
    as_json = llbkit(tmp_path / "root", "debug", "info", "--format", "{{json .}}")
    assert json.loads(as_json.stdout) == {
        "buildkitVersion": {"package": "llbkit", "version": __version__, "revision": ""}
    }
    assert "only json" in _one_line_error(
        llbkit(tmp_path / "root", "debug", "info", "--format", "{{.Nope}}")
    )


@pytest.mark.root
def test_debug_logs_keeps_every_line_of_a_long_log(tmp_path: Path, busybox_image: str) -> None:
    state = llb.image(busybox_image).run(shell="seq 1 30000").root()
    root = tmp_path / "root"
    built = subprocess.run(
        [*LLBKIT, "--root", str(root), "build", "--progress", "plain"],
        input=definition(state),
        capture_output=True,
    )
    assert built.returncode == 0, built.stderr
    (ref,) = _refs(root)
    logs = llbkit(root, "debug", "logs", ref).stdout.decode()
    assert logs == built.stderr.decode()
    numbers = [line.split()[-1] for line in logs.splitlines() if re.match(r"#\d+ \d+\.\d+ ", line)]
    assert numbers == [str(n) for n in range(1, 30001)]


def test_records_past_max_entries_and_age_go_at_most_every_two_minutes(tmp_path: Path) -> None:
    """BuildKit's history GC: unpinned records beyond ``maxEntries`` and older than ``maxAge``
    are deleted, looked for on a 120 s timer (here: once per 120 s for the state root), not
    by reading every record after every build."""
    root = tmp_path / "root"
    config = tmp_path / "buildkitd.toml"
    config.write_text("[history]\nmaxAge = 0\nmaxEntries = 2\n")

    def build() -> None:
        done = llbkit(root, "--config", str(config), "build", stdin=simple())
        assert done.returncode == 0, done.stderr

    for _ in range(4):
        build()
    assert len(_refs(root)) == 4  # the first build looked; the others came within 120 s
    stamp = root / "history" / ".gc"
    long_ago = stamp.stat().st_mtime - 121
    os.utime(stamp, (long_ago, long_ago))
    newest = _refs(root)[0]
    build()
    refs = _refs(root)
    assert len(refs) == 2 and refs[1] == newest, refs
    assert sorted(p.stem for p in (root / "history").glob("*.jsonl")) == sorted(refs)  # logs too
    build()
    assert len(_refs(root)) == 3
