"""Turning the measured seconds into tables (terminal and Markdown), JSON and a chart."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: (scenario, phase prefix) -> the most llbkit's median may be of BuildKit's
GOALS = {
    ("parallel-stages", "cold"): 1.0,
    ("exec-chain", "cold"): 0.75,
    ("noop-rebuild", "warm"): 1.0,
    ("context", "warm, one file changed"): 0.5,
    ("export", "gzip"): 0.5,
    ("export", "zstd"): 0.5,
    ("graph-scale", "wide"): 0.5,
    ("graph-scale", "chain"): 0.5,
    ("concurrency", ""): 1.0,
}
#: whose figures the goals compare with, in order of preference
BUILDKITS = ("buildkit", "docker")


@dataclass
class Results:
    """Seconds by scenario, phase and tool; what failed or could not run, and why."""

    meta: dict[str, Any]
    seconds: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    unsupported: dict[str, list[str]] = field(default_factory=dict)

    def add(self, scenario: str, tool: str, times: Mapping[str, float | str]) -> None:
        phases = self.seconds.setdefault(scenario, {})
        for phase, value in times.items():
            if isinstance(value, str):
                self.errors.setdefault(scenario, {})[f"{tool} ({phase})"] = value[:300]
            else:
                phases.setdefault(phase, {}).setdefault(tool, []).append(value)

    def failed(self, scenario: str, tool: str, phase: str) -> bool:
        errors = self.errors.get(scenario, {})
        return tool in errors or f"{tool} ({phase})" in errors


@dataclass(frozen=True)
class Row:
    scenario: str
    phase: str
    tool: str
    runs: int
    median: float
    min: float
    max: float
    ratio: float | None  # this tool's median over llbkit's


def rows(results: Results) -> list[Row]:
    out = []
    for scenario, phases in results.seconds.items():
        for phase, tools in phases.items():
            ours = statistics.median(tools["llbkit"]) if tools.get("llbkit") else None
            for tool, values in tools.items():
                median = statistics.median(values)
                ratio = median / ours if ours else None
                out.append(
                    Row(scenario, phase, tool, len(values), median, min(values), max(values), ratio)
                )
    return out


def goals(results: Results) -> list[dict[str, Any]]:
    """llbkit's median over BuildKit's for each phase the issue sets a goal for."""
    out = []
    for scenario, phases in results.seconds.items():
        for phase, tools in phases.items():
            goal = next(
                (g for (s, p), g in GOALS.items() if s == scenario and phase.startswith(p)), None
            )
            peer = next((t for t in BUILDKITS if tools.get(t)), None)
            if goal is None or peer is None or not tools.get("llbkit"):
                continue
            ratio = statistics.median(tools["llbkit"]) / statistics.median(tools[peer])
            out.append(
                {
                    "scenario": scenario,
                    "phase": phase,
                    "against": peer,
                    "ratio": ratio,
                    "goal": goal,
                    "met": ratio <= goal,
                }
            )
    return out


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def text(results: Results) -> str:
    """A table per scenario: tool, median, min, max, ratio to llbkit."""
    lines: list[str] = []
    by_scenario: dict[str, list[Row]] = {}
    for row in rows(results):
        by_scenario.setdefault(row.scenario, []).append(row)
    for scenario, scenario_rows in by_scenario.items():
        lines += ["", f"== {scenario}"]
        lines.append(f"  {'phase':<26}{'tool':<10}{'median s':>10}{'min':>9}{'max':>9}{'ratio':>8}")
        for row in scenario_rows:
            ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
            lines.append(
                f"  {row.phase:<26}{row.tool:<10}{_seconds(row.median):>10}"
                f"{_seconds(row.min):>9}{_seconds(row.max):>9}{ratio:>8}"
            )
        for tool, message in results.errors.get(scenario, {}).items():
            lines.append(f"  {tool}: failed: {message}")
        if results.unsupported.get(scenario):
            lines.append(f"  cannot run it: {', '.join(results.unsupported[scenario])}")
    checked = goals(results)
    if checked:
        lines += ["", "== goals (llbkit's median / BuildKit's; lower is better)"]
        for g in checked:
            mark = "met" if g["met"] else "MISSED"
            lines.append(
                f"  {g['scenario'] + ' ' + g['phase']:<44}{g['ratio']:>6.2f}  "
                f"(goal <= {g['goal']:.2f}, vs {g['against']})  {mark}"
            )
    return "\n".join(lines) + "\n"


def markdown(results: Results) -> str:
    """One table, a column per tool: median seconds and, for peers, the ratio to llbkit."""
    tools = list(dict.fromkeys(r.tool for r in rows(results)))
    head = "| scenario | phase | " + " | ".join(tools) + " |"
    lines = [head, "|" + "---|" * (len(tools) + 2)]
    table: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows(results):
        table.setdefault((row.scenario, row.phase), {})[row.tool] = row
    for (scenario, phase), cells in table.items():
        shown = []
        for tool in tools:
            row = cells.get(tool)
            if row is None:
                shown.append("failed" if results.failed(scenario, tool, phase) else "n/a")
            elif tool == "llbkit" or row.ratio is None:
                shown.append(_seconds(row.median))
            else:
                shown.append(f"{_seconds(row.median)} ({row.ratio:.2f}x)")
        lines.append(f"| {scenario} | {phase} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def save(results: Results, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": results.meta,
        "rows": [asdict(r) for r in rows(results)],
        "seconds": results.seconds,
        "errors": results.errors,
        "unsupported": results.unsupported,
        "goals": goals(results),
    }
    written = [out / "results.json", out / "results.md", out / "results.txt"]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    written[1].write_text(markdown(results))
    written[2].write_text(text(results))
    chart = _chart(results, out / "results.png")
    return [*written, chart] if chart else written


def _chart(results: Results, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None  # the table and JSON are written anyway
    scenarios = list(results.seconds)
    if not scenarios:
        return None
    tools = list(dict.fromkeys(r.tool for r in rows(results)))
    columns = 2
    height = (len(scenarios) + columns - 1) // columns
    fig, axes = plt.subplots(height, columns, figsize=(12, 3.2 * height), squeeze=False)
    width = 0.8 / max(len(tools), 1)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        phases = list(results.seconds[scenario])
        for n, tool in enumerate(tools):
            xs, ys = [], []
            for x, phase in enumerate(phases):
                values = results.seconds[scenario][phase].get(tool)
                if values:
                    xs.append(x + n * width)
                    ys.append(statistics.median(values))
            ax.bar(xs, ys, width, label=tool)
        ax.set_title(scenario)
        ax.set_xticks([x + width * (len(tools) - 1) / 2 for x in range(len(phases))], phases)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("seconds (median)")
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
