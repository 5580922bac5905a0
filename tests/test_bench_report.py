"""The benchmark's report: medians, ratios to llbkit, goals, and failures shown as such."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from memory import Peak
from report import MB, Results, Timed, goals, markdown, rows, save, scaled, text
from scenarios import Sizes, Work, over_budget


def results() -> Results:
    out = Results(meta={"runs": 3})
    for llbkit, buildkit in ((1.0, 2.0), (3.0, 4.0), (2.0, 6.0)):
        out.add("export", "llbkit", {"gzip": llbkit})
        out.add("export", "buildkit", {"gzip": buildkit})
    out.add("graph-scale", "llbkit", {"wide-10 cold": 1.0, "chain-10 cold": 2.0})
    out.add("graph-scale", "buildkit", {"wide-10 cold": 1.5, "chain-10 cold": "mount options"})
    out.unsupported["graph-scale"] = ["docker"]
    return out


def test_medians_ratios_and_goals() -> None:
    by_key = {(r.scenario, r.phase, r.tool): r for r in rows(results())}
    ours, theirs = by_key["export", "gzip", "llbkit"], by_key["export", "gzip", "buildkit"]
    assert (ours.median, ours.min, ours.max) == (2.0, 1.0, 3.0)
    assert theirs.median == 4.0 and theirs.ratio == 2.0
    checked = {(g["scenario"], g["phase"]): g for g in goals(results())}
    assert checked["export", "gzip"]["ratio"] == 0.5 and checked["export", "gzip"]["met"]
    wide = checked["graph-scale", "wide-10 cold"]
    assert round(wide["ratio"], 2) == 0.67 and not wide["met"]
    assert ("graph-scale", "chain-10 cold") not in checked  # BuildKit has no figure to compare


def test_the_daemons_goals_compare_llbkitd_with_buildkit() -> None:
    out = Results(meta={"runs": 3})
    for llbkit, llbkitd, buildkit in ((0.2, 0.05, 0.06), (0.2, 0.07, 0.06), (0.2, 0.06, 0.05)):
        out.add("noop-rebuild", "llbkit", {"warm": llbkit})
        out.add("noop-rebuild", "llbkitd", {"warm": llbkitd})
        out.add("noop-rebuild", "buildkit", {"warm": buildkit})
    checked = {(g["tool"], g["phase"]): g for g in goals(out)}
    assert not checked["llbkit", "warm"]["met"]
    daemon = checked["llbkitd", "warm"]
    assert daemon["ratio"] == pytest.approx(1.0) and daemon["met"]
    assert "noop-rebuild warm (llbkitd)" in text(out)


def test_upload_throughput_beside_the_time_and_its_goal(tmp_path: Path) -> None:
    out = Results(meta={})
    for llbkit, buildkit in ((0.5, 2.0), (1.0, 3.0), (2.0, 4.0)):  # 10 MB each time
        out.add("ci-cache", "llbkit", {"chain export": Timed(llbkit, None, 10 * MB)})
        out.add("ci-cache", "buildkit", {"chain export": Timed(buildkit, None, 10 * MB)})
    assert out.rate("ci-cache", "chain export", "llbkit") == 10.0
    assert out.rate("ci-cache", "chain export", "buildkit") == pytest.approx(10 / 3)
    checked = {g["phase"]: g for g in goals(out)}
    rate = checked["chain export, upload MB/s"]
    assert rate["ratio"] == pytest.approx(3.0) and rate["met"]  # higher is better: >= 2
    assert (
        checked["chain export"]["ratio"] == pytest.approx(1 / 3) and checked["chain export"]["met"]
    )
    shown = text(out)
    assert "chain export, upload MB/s (median): llbkit 10.0, buildkit 3.3" in shown
    assert "(goal >= 2.00, vs buildkit)  met" in shown
    save(out, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["upload_bytes_per_second"]["ci-cache"]["chain export"]["llbkit"][0] == 20 * MB


def test_the_cache_goals_through_the_daemon_too() -> None:
    """ci-cache's time and throughput goals are checked for llbkitd as for embedded llbkit:
    BuildKit's figure is a daemon's."""
    out = Results(meta={})
    for llbkit, llbkitd, buildkit in ((1.0, 0.3, 0.6), (1.2, 0.5, 0.5)):
        out.add("ci-cache", "llbkit", {"chain export": Timed(llbkit, None, 10 * MB)})
        out.add("ci-cache", "llbkitd", {"chain export": Timed(llbkitd, None, 10 * MB)})
        out.add("ci-cache", "buildkit", {"chain export": Timed(buildkit, None, 10 * MB)})
    checked = {(g["tool"], g["phase"]): g for g in goals(out)}
    assert not checked["llbkit", "chain export"]["met"]
    assert checked["llbkitd", "chain export"]["ratio"] == pytest.approx(0.4 / 0.55)
    assert not checked["llbkitd", "chain export"]["met"]  # 0.73 > 0.7
    rate = checked["llbkitd", "chain export, upload MB/s"]
    # the median of each run's rate: (10/0.3 + 10/0.5) / 2 over (10/0.6 + 10/0.5) / 2
    assert rate["ratio"] == pytest.approx(80 / 55) and not rate["met"]
    assert "ci-cache chain export, upload MB/s (llbkitd)" in text(out)


def test_a_failed_phase_is_reported_not_dropped(tmp_path: Path) -> None:
    table = markdown(results())
    assert "| graph-scale | chain-10 cold | 2.00 | failed |" in table
    assert "| export | gzip | 2.00 | 4.00 (2.00x) |" in table
    assert "buildkit (chain-10 cold): failed: mount options" in text(results())
    assert "cannot run it: docker" in text(results())
    written = save(results(), tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["errors"]["graph-scale"] == {"buildkit (chain-10 cold)": "mount options"}
    assert {p.name for p in written} >= {"results.json", "results.md", "results.txt"}


def with_memory() -> Results:
    out = Results(meta={"runs": 2})
    for ours, theirs in ((100, 300), (120, 360)):
        out.add("noop-rebuild", "llbkit", {"warm": Timed(0.4, ours * MB)})
        out.add("noop-rebuild", "buildkit", {"warm": Timed(0.1, theirs * MB)})
    out.add("noop-rebuild", "llbkitd", {"warm": 0.5})  # seconds only: no memory shown
    return out


def test_peak_memory_beside_each_time(tmp_path: Path) -> None:
    by_tool = {r.tool: r for r in rows(with_memory())}
    assert by_tool["llbkit"].peak_mb == 110 and by_tool["buildkit"].peak_mb == 330
    assert by_tool["buildkit"].peak_ratio == 3.0
    assert by_tool["llbkitd"].peak_mb is None and by_tool["llbkitd"].peak_ratio is None
    table = markdown(with_memory())
    assert (
        "| noop-rebuild | warm | 0.400 · 110 MB | 0.100 (0.25x) · 330 MB (3.00x) | 0.500 (1.25x) |"
        in table
    )
    lines = text(with_memory()).splitlines()
    assert "peak MB" in next(line for line in lines if "median s" in line)
    buildkit = next(line for line in lines if " buildkit " in line).split()
    assert buildkit[-2:] == ["330", "3.00"]
    assert next(line for line in lines if " llbkitd " in line).split()[-2:] == ["-", "-"]
    save(with_memory(), tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["peak_bytes"]["noop-rebuild"]["warm"]["buildkit"] == [300 * MB, 360 * MB]
    shown = {r["tool"]: r for r in data["rows"]}
    assert shown["buildkit"]["peak_mb"] == 330 and shown["llbkitd"]["peak_mb"] is None


def test_scaling_phases_are_read_with_their_size() -> None:
    assert scaled("wide, 2500 ops") == ("wide", 2500)
    assert scaled("one file changed, 50000 files") == ("one file changed", 50000)
    assert scaled("cold") is None and scaled("wide-200 cold") is None


def test_the_chart_has_time_and_memory(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = with_memory()
    for n, seconds in ((1000, 1.0), (2000, 2.0)):
        out.add("scale-graph", "llbkit", {f"wide, {n} ops": Timed(seconds, n * MB)})
        out.add("scale-graph", "buildkit", {f"wide, {n} ops": "mount options is too long"})
    assert tmp_path / "results.png" in save(out, tmp_path)


def _holding(megabytes: int) -> list[str]:
    """A shell whose child holds ``megabytes`` of touched memory until its stdin closes."""
    hold = f"import sys; b = bytearray({megabytes} * 2**20); sys.stdout.write('x\\n'); "
    hold += "sys.stdout.flush(); sys.stdin.read()"
    return ["sh", "-c", f'{sys.executable} -c "{hold}"; true']


def test_peak_memory_counts_the_whole_tree() -> None:
    with (
        subprocess.Popen(_holding(200), stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc,
        Peak(lambda: [proc.pid]) as peak,
    ):
        assert proc.stdout is not None and proc.stdout.readline() == b"x\n"
        assert proc.stdin is not None
        deadline = time.monotonic() + 10  # until a sample has seen it, on a busy machine
        while peak.bytes < 200 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.stdin.close()
        proc.wait()
    # The shell is small: the 200 MB are its child's, found through /proc.
    assert 200 * 2**20 < peak.bytes < 400 * 2**20


def test_a_scaling_series_stops_after_a_failed_or_slow_size(tmp_path: Path) -> None:
    work = Work(tmp_path, "base", Sizes(scale_budget=60.0))
    times: dict[str, Timed | str] = {
        "wide, 1000 ops": Timed(10.0),
        "wide, 2500 ops": Timed(61.0),
        "chain, 1000 ops": "buildctl exited 1: mount options is too long",
        "chain, 2500 ops": "not run: the size before failed",
    }
    assert over_budget(work, times, "") == ""
    assert over_budget(work, times, "wide, 1000 ops") == ""
    assert "took 61s (over 60s)" in over_budget(work, times, "wide, 2500 ops")
    assert over_budget(work, times, "chain, 1000 ops") == "not run: the size before failed"
    assert over_budget(work, times, "chain, 2500 ops") == "not run: the size before failed"
