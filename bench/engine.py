"""Cold and warm builds of the wide and chain graphs with ``llbkit build``, as a user runs them.

    .venv/bin/python bench/engine.py [--size 1000] [--runs 3] [--graph wide|chain]

Each cold run uses a new state root and exports to a new directory; then the same build runs
warm without an output, and warm again exporting to another new directory. Times are
wall-clock for the whole command (process start, plugin discovery, solve, export).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main, timed

LLBKIT = str(Path(sys.executable).with_name("llbkit"))
# As installed for users: compiled bytecode is cached, not rebuilt on every start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def build(work: Path, data: bytes, out: Path | None) -> float:
    output = ["--output", f"type=local,dest={out}"] if out is not None else []
    command = [LLBKIT, "--root", str(work / "root"), "build", "--progress", "quiet", *output]
    return timed(lambda: subprocess.run(command, input=data, check=True, env=ENV))


if __name__ == "__main__":
    sys.exit(main(__doc__ or "", build))
