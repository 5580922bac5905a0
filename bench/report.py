"""Turning the measured seconds and peak memory into tables (terminal and Markdown), JSON and
a chart."""

from __future__ import annotations

import json
import re
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
    ("ci-cache", ""): 0.7,
}
#: the same for llbkit through llbkitd (BuildKit's own shape: a client of a running daemon)
DAEMON_GOALS = {
    ("noop-rebuild", "warm"): 1.0,
    ("parallel-stages", "warm"): 1.0,
    ("context", "warm, no change"): 1.0,
    ("concurrency", ""): 1.0,
    ("ci-cache", ""): 0.7,
}
#: (scenario, phase prefix) -> the least llbkit's median upload throughput may be of BuildKit's
RATE_GOALS = {("ci-cache", ""): 2.0}
#: whose figures the goals compare with, in order of preference
BUILDKITS = ("buildkit", "docker")


MB = 10**6


@dataclass(frozen=True)
class Timed:
    """One timed phase: its seconds and the peak resident bytes of the tool's processes
    meanwhile (``bench/memory.py``; None when not measured)."""

    seconds: float
    peak: int | None = None
    #: bytes the phase uploaded (the S3 cache's exports), for its throughput
    sent: int | None = None


@dataclass
class Results:
    """Seconds and peak bytes by scenario, phase and tool; what failed or could not run, and
    why."""

    meta: dict[str, Any]
    seconds: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    peaks: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)
    #: bytes per second uploaded, by scenario, phase and tool (phases that upload)
    rates: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)

    def add(self, scenario: str, tool: str, times: Mapping[str, Timed | float | str]) -> None:
        phases = self.seconds.setdefault(scenario, {})
        for phase, value in times.items():
            if isinstance(value, str):
                self.errors.setdefault(scenario, {})[f"{tool} ({phase})"] = value[:300]
                continue
            timing = value if isinstance(value, Timed) else Timed(value)
            phases.setdefault(phase, {}).setdefault(tool, []).append(timing.seconds)
            if timing.peak is not None:
                peaks = self.peaks.setdefault(scenario, {}).setdefault(phase, {})
                peaks.setdefault(tool, []).append(timing.peak)
            if timing.sent is not None and timing.seconds > 0:
                rates = self.rates.setdefault(scenario, {}).setdefault(phase, {})
                rates.setdefault(tool, []).append(timing.sent / timing.seconds)

    def rate(self, scenario: str, phase: str, tool: str) -> float | None:
        """The median over runs of the tool's upload throughput in this phase, in MB/s."""
        values = self.rates.get(scenario, {}).get(phase, {}).get(tool)
        return statistics.median(values) / MB if values else None

    def peak(self, scenario: str, phase: str, tool: str) -> float | None:
        """The median over runs of the tool's peak memory in this phase, in MB."""
        values = self.peaks.get(scenario, {}).get(phase, {}).get(tool)
        return statistics.median(values) / MB if values else None

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
    peak_mb: float | None = None  # the median of the runs' peak resident memory
    peak_ratio: float | None = None  # this tool's peak over llbkit's


def rows(results: Results) -> list[Row]:
    out = []
    for scenario, phases in results.seconds.items():
        for phase, tools in phases.items():
            ours = statistics.median(tools["llbkit"]) if tools.get("llbkit") else None
            our_peak = results.peak(scenario, phase, "llbkit")
            for tool, values in tools.items():
                median = statistics.median(values)
                ratio = median / ours if ours else None
                peak = results.peak(scenario, phase, tool)
                peak_ratio = peak / our_peak if peak is not None and our_peak else None
                out.append(
                    Row(
                        scenario,
                        phase,
                        tool,
                        len(values),
                        median,
                        min(values),
                        max(values),
                        ratio,
                        peak,
                        peak_ratio,
                    )
                )
    return out


def goals(results: Results) -> list[dict[str, Any]]:
    """llbkit's median over BuildKit's for each phase the issues set a goal for (embedded,
    and through llbkitd)."""
    return [
        *_goals(results.seconds, GOALS, "", higher_is_better=False),
        *_goals(results.seconds, DAEMON_GOALS, "", higher_is_better=False, tool="llbkitd"),
        *_goals(results.rates, RATE_GOALS, ", upload MB/s", higher_is_better=True),
        *_goals(results.rates, RATE_GOALS, ", upload MB/s", higher_is_better=True, tool="llbkitd"),
    ]


def _goals(
    figures: dict[str, dict[str, dict[str, list[float]]]],
    targets: dict[tuple[str, str], float],
    suffix: str,
    *,
    higher_is_better: bool,
    tool: str = "llbkit",
) -> list[dict[str, Any]]:
    out = []
    for scenario, phases in figures.items():
        for phase, tools in phases.items():
            goal = next(
                (g for (s, p), g in targets.items() if s == scenario and phase.startswith(p)),
                None,
            )
            peer = next((t for t in BUILDKITS if tools.get(t)), None)
            if goal is None or peer is None or not tools.get(tool):
                continue
            ratio = statistics.median(tools[tool]) / statistics.median(tools[peer])
            row: dict[str, Any] = {
                "tool": tool,
                "scenario": scenario,
                "phase": f"{phase}{suffix}",
                "against": peer,
                "ratio": ratio,
                "goal": goal,
                "met": ratio >= goal if higher_is_better else ratio <= goal,
            }
            if higher_is_better:
                row["higher_is_better"] = True
            out.append(row)
    return out


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def text(results: Results) -> str:
    """A table per scenario: tool, median, min, max, ratio to llbkit, then the peak memory and
    its ratio to llbkit's."""
    lines: list[str] = []
    by_scenario: dict[str, list[Row]] = {}
    for row in rows(results):
        by_scenario.setdefault(row.scenario, []).append(row)
    for scenario, scenario_rows in by_scenario.items():
        lines += ["", f"== {scenario}"]
        lines.append(
            f"  {'phase':<30}{'tool':<10}{'median s':>10}{'min':>9}{'max':>9}{'ratio':>8}"
            f"{'peak MB':>9}{'ratio':>8}"
        )
        for row in scenario_rows:
            ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
            peak_ratio = f"{row.peak_ratio:.2f}" if row.peak_ratio is not None else "-"
            lines.append(
                f"  {row.phase:<30}{row.tool:<10}{_seconds(row.median):>10}"
                f"{_seconds(row.min):>9}{_seconds(row.max):>9}{ratio:>8}"
                f"{_mb(row.peak_mb):>9}{peak_ratio:>8}"
            )
        for phase, tools in results.rates.get(scenario, {}).items():
            shown = ", ".join(
                f"{tool} {statistics.median(values) / MB:.1f}" for tool, values in tools.items()
            )
            lines.append(f"  {phase}, upload MB/s (median): {shown}")
        for tool, message in results.errors.get(scenario, {}).items():
            lines.append(f"  {tool}: failed: {message}")
        if results.unsupported.get(scenario):
            lines.append(f"  cannot run it: {', '.join(results.unsupported[scenario])}")
    checked = goals(results)
    if checked:
        lines += ["", "== goals (llbkit's median / BuildKit's; lower is better unless >=)"]
        for g in checked:
            mark = "met" if g["met"] else "MISSED"
            bound = ">=" if g.get("higher_is_better") else "<="
            through = " (llbkitd)" if g["tool"] != "llbkit" else ""
            lines.append(
                f"  {g['scenario'] + ' ' + g['phase'] + through:<44}{g['ratio']:>6.2f}  "
                f"(goal {bound} {g['goal']:.2f}, vs {g['against']})  {mark}"
            )
    return "\n".join(lines) + "\n"


def markdown(results: Results) -> str:
    """One table, a column per tool: median seconds and peak memory and, for peers, their
    ratios to llbkit's."""
    tools = list(dict.fromkeys(r.tool for r in rows(results)))
    head = "| scenario | phase | " + " | ".join(tools) + " |"
    lines = [head, "|" + "---|" * (len(tools) + 2)]
    table: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows(results):
        table.setdefault((row.scenario, row.phase), {})[row.tool] = row
    for (scenario, phase), cells in table.items():
        shown = []
        for tool in tools:
            cell = cells.get(tool)
            if cell is None:
                shown.append("failed" if results.failed(scenario, tool, phase) else "n/a")
            else:
                shown.append(_cell(cell))
        lines.append(f"| {scenario} | {phase} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: Row) -> str:
    """``4.00 (2.00x)``, and with memory ``4.00 (2.00x) · 300 MB (1.50x)``."""
    cell = _seconds(row.median)
    if row.tool != "llbkit" and row.ratio is not None:
        cell += f" ({row.ratio:.2f}x)"
    if row.peak_mb is not None:
        cell += f" · {_mb(row.peak_mb)} MB"
        if row.tool != "llbkit" and row.peak_ratio is not None:
            cell += f" ({row.peak_ratio:.2f}x)"
    return cell


def save(results: Results, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": results.meta,
        "rows": [asdict(r) for r in rows(results)],
        "seconds": results.seconds,
        "peak_bytes": results.peaks,
        "upload_bytes_per_second": results.rates,
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


def scaled(phase: str) -> tuple[str, int] | None:
    """A scaling phase's series and size: ``"wide, 2500 ops"`` is ``("wide", 2500)``."""
    found = _SIZE.search(phase)
    if found is None:
        return None
    return _SIZE.sub("", phase, count=1).strip(" ,"), int(found.group(1))


_SIZE = re.compile(r"\b(\d+) (ops|files)\b")


def _chart(results: Results, path: Path) -> Path | None:
    """A row per scenario: seconds on the left, peak memory on the right; bars per phase, or
    lines over size for a scaling scenario (every phase named with its size)."""
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
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(12, 3.2 * len(scenarios)), squeeze=False)
    for (left, right), scenario in zip(axes, scenarios, strict=True):
        phases = list(results.seconds[scenario])

        def seconds(phase: str, tool: str, s: str = scenario) -> float | None:
            values = results.seconds[s][phase].get(tool)
            return statistics.median(values) if values else None

        def megabytes(phase: str, tool: str, s: str = scenario) -> float | None:
            return results.peak(s, phase, tool)

        for ax, value, label in ((left, seconds, "seconds"), (right, megabytes, "peak MB")):
            if all(scaled(p) for p in phases):
                _lines(ax, phases, tools, value)
            else:
                _bars(ax, phases, tools, value)
            ax.set_title(f"{scenario}: {label}")
            ax.tick_params(axis="x", labelsize=8)
            ax.set_ylabel(f"{label} (median)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bars(ax: Any, phases: list[str], tools: list[str], value: Any) -> None:
    width = 0.8 / max(len(tools), 1)
    for n, tool in enumerate(tools):
        points = [(x + n * width, value(p, tool)) for x, p in enumerate(phases)]
        shown = [(x, y) for x, y in points if y is not None]
        ax.bar([x for x, _ in shown], [y for _, y in shown], width, label=tool)
    ax.set_xticks([x + width * (len(tools) - 1) / 2 for x in range(len(phases))], phases)


def _lines(ax: Any, phases: list[str], tools: list[str], value: Any) -> None:
    """A line per tool (its colour) and series (its dash) over the phases' sizes."""
    series: dict[str, list[tuple[int, str]]] = {}
    for phase in phases:
        name, size = scaled(phase) or ("", 0)
        series.setdefault(name, []).append((size, phase))
    for colour, tool in enumerate(tools):
        for dash, (name, points) in zip(("-", "--", ":", "-."), series.items(), strict=False):
            shown = [(n, value(p, tool)) for n, p in sorted(points)]
            shown = [(n, y) for n, y in shown if y is not None]
            if shown:
                xs, ys = zip(*shown, strict=True)
                ax.plot(xs, ys, f"C{colour}{dash}", marker="o", label=f"{tool} {name}")
    found = _SIZE.search(phases[0])
    ax.set_xlabel(found.group(2) if found else "size")
