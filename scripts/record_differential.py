#!/usr/bin/env python3
"""Record what BuildKit builds from every differential case (tests/differential/): the changed
tree, the image config and history, or the error, into tests/differential/vectors/<category>.json
with the generator's seed and BuildKit's version.

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/record_differential.py [--seed N] [--count N] [name...]

Needs buildkitd v0.11.6 reaching 127.0.0.1:5155 over plain HTTP (``[registry."127.0.0.1:5155"]
http = true``), docker-registry and busybox-static. Names, when given, re-record only those cases
(in place, keeping the others).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.differential import cases as handwritten  # noqa: E402
from tests.differential.harness import (  # noqa: E402
    BUILDKIT_VERSION,
    VECTORS,
    Case,
    busybox_tree,
    error_cause,
    materialize,
    opts,
    push_images,
    result_of,
)

PORT = 5155


def record(case: Case, buildctl: str, registry: str, base: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx, dfdir = materialize(case, Path(tmp), registry)
        command = [
            buildctl,
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={dfdir}",
            "--progress",
            "plain",
            *(f"--opt={k}={v}" for k, v in opts(case, registry).items()),
            "--output",
            "type=oci,dest=-",
        ]
        done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode().strip().splitlines()
        return {"error": error_cause(lines[-1] if lines else "failed", registry)}
    try:
        return result_of(done.stdout, base, registry)
    except Exception as err:  # a harness bug: say which case, keep recording the others
        print(f"{case.name}: cannot read BuildKit's output: {err!r}", file=sys.stderr)
        return {"unreadable": repr(err)}


def main() -> int:
    from llbkit.sdk.testing.registry import LocalRegistry
    from tests.differential.generate import generated

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--count", type=int, default=220)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    buildctl = os.environ.get("BUILDCTL", "buildctl")
    everything = handwritten.CASES + generated(args.seed, args.count)
    names = [c.name for c in everything]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    chosen = [c for c in everything if not args.names or c.name in args.names]
    base = busybox_tree()
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(Path(tmp) / "r", port=PORT) as reg:
        push_images(reg.host)
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda c: record(c, buildctl, reg.host, base), chosen))
    recorded = {c.name: {**c.record(), "result": r} for c, r in zip(chosen, results, strict=True)}
    if args.names:
        for path in VECTORS.glob("*.json"):
            for item in json.loads(path.read_text())["cases"]:
                recorded.setdefault(item["name"], item)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for case in everything:
        if case.name in recorded:
            by_category.setdefault(case.category, []).append(recorded[case.name])
    VECTORS.mkdir(exist_ok=True)
    for path in VECTORS.glob("*.json"):
        path.unlink()
    for category, items in sorted(by_category.items()):
        document = {
            "buildkit": BUILDKIT_VERSION,
            "seed": args.seed,
            "count": args.count,
            "cases": items,
        }
        (VECTORS / f"{category}.json").write_text(json.dumps(document, indent=1) + "\n")
        errors = sum("error" in i["result"] for i in items)
        print(f"{category}: {len(items)} cases, {errors} failing in BuildKit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
