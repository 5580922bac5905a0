#!/usr/bin/env python3
"""Record what BuildKit builds from each tree case into tests/vectors/trees/<case>.json.

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/gen_tree_vectors.py [case...]

Needs a running buildkitd (v0.11.6, OCI worker, as root). A case BuildKit refuses is recorded
with its error, so llbkit can be checked to refuse it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.trees.cases import CASES, definition  # noqa: E402
from tests.trees.context import make_context  # noqa: E402
from tests.trees.listing import tar_listing  # noqa: E402


def main() -> int:
    buildctl = os.environ.get("BUILDCTL", "buildctl")
    names = sys.argv[1:] or sorted(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_context(Path(tmp))
        for name in names:
            out = Path(tmp) / f"out-{name}"
            done = subprocess.run(
                [
                    buildctl,
                    "build",
                    "--progress",
                    "plain",
                    "--local",
                    f"context={ctx}",
                    "--output",
                    f"type=tar,dest={out}",
                ],
                input=definition(name),
                capture_output=True,
                check=False,
            )
            if done.returncode == 0:
                record = {"tree": tar_listing(out.read_bytes())}
            else:
                lines = done.stderr.decode().strip().splitlines()
                record = {"error": lines[-1] if lines else "failed"}
            target = ROOT / "tests" / "vectors" / "trees" / f"{name}.json"
            target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"{name}: {'error' if 'error' in record else len(record['tree'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
