#!/usr/bin/env python3
"""Regenerate core/src/llbkit/core/plugins/_known.py from the repository's pyproject files.

The table lets an "unknown exporter 'oci'" error say which distribution to install. Its sources
are pinned by construction: every ``plugins/*/pyproject.toml`` of this repository (the template
excluded). Run with ``--check`` to fail when the committed file is stale.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "core/src/llbkit/core/plugins/_known.py"
GROUPS = (
    "llbkit.frontends",
    "llbkit.workers",
    "llbkit.exporters",
    "llbkit.cache_backends",
    "llbkit.sources",
)


def collect() -> dict[tuple[str, str], str]:
    known: dict[tuple[str, str], str] = {}
    for path in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        if path.parent.name.startswith("_"):
            continue
        project = tomllib.loads(path.read_text())["project"]
        for group, names in project.get("entry-points", {}).items():
            if group in GROUPS:
                for name in names:
                    known[(group, name)] = project["name"]
    return known


def render(known: dict[tuple[str, str], str]) -> str:
    head = (
        "# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_known_plugins.py\n"
        '"""Which distribution provides each plugin name llbkit\'s own repository ships."""\n\n'
    )
    if not known:
        return head + "KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {}\n"
    rows = "".join(f"    ({g!r}, {n!r}): {d!r},\n" for (g, n), d in sorted(known.items()))
    return head + "KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {\n" + rows + "}\n"


def main() -> int:
    text = render(collect())
    if "--check" in sys.argv[1:]:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale; run scripts/gen_known_plugins.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
