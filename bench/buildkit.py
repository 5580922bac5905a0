"""The same cold/warm builds with a real BuildKit, for the figures beside llbkit's.

    BUILDCTL=buildctl BUILDKIT_HOST=unix:///run/buildkit/buildkitd.sock \\
        .venv/bin/python bench/buildkit.py [--size 1000] [--runs 3] [--graph wide|chain]

Cold: after ``buildctl prune --all``, exporting to a new directory; warm: the same build
without an output, then with one, as ``bench/engine.py`` measures llbkit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main, timed

BUILDCTL = os.environ.get("BUILDCTL", "buildctl")


def build(work: Path, data: bytes, out: Path | None) -> float:
    output = ["--output", f"type=local,dest={out}"] if out is not None else []
    command = [BUILDCTL, "build", "--progress", "plain", *output]
    return timed(lambda: subprocess.run(command, input=data, check=True, capture_output=True))


def prune() -> None:
    subprocess.run([BUILDCTL, "prune", "--all"], check=True, capture_output=True)


if __name__ == "__main__":
    sys.exit(main(__doc__ or "", build, before_cold=prune))
