"""The benchmark's report: medians, ratios to llbkit, goals, and failures shown as such."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from report import Results, goals, markdown, rows, save, text


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
