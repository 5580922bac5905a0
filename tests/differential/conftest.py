"""The differential replay's summary: passes per category, so parity is read by the hundreds."""

from __future__ import annotations

from collections import Counter

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[str, Counter[str]] = {}
    for outcome in ("passed", "failed", "xfailed", "xpassed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", []))
            if "category" in props and getattr(report, "when", "call") in ("call", "setup"):
                if outcome == "skipped" and report.when != "setup":
                    continue
                found = counts.setdefault(props["category"], Counter())
                found[outcome] += 1
                if props.get("deliberate") and outcome == "passed":
                    found["deliberate"] += 1
    if not counts:
        return
    terminalreporter.section("differential cases per category")
    total: Counter[str] = Counter()
    for category in sorted(counts):
        found = counts[category]
        total.update(found)
        terminalreporter.write_line(f"{category:>13}: {_line(found)}")
    terminalreporter.write_line(f"{'all':>13}: {_line(total)}")


def _line(found: Counter[str]) -> str:
    cases = sum(v for k, v in found.items() if k != "deliberate")
    rest = ", ".join(
        f"{found[k]} {k}"
        for k in ("deliberate", "failed", "xfailed", "xpassed", "skipped")
        if found[k]
    )
    return f"{found['passed']}/{cases} passed" + (f" ({rest})" if rest else "")
