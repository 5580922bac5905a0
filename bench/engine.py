"""Cold and warm builds of the wide and chain graphs with ``llbkit build``, as a user runs them.

    .venv/bin/python bench/engine.py [--size 1000] [--runs 3]

Each cold run uses a new state root; each warm run repeats the build on the root it filled.
Times are wall-clock for the whole command (process start, plugin discovery, solve, export).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graphs import GRAPHS

from llbkit.sdk import llb

LLBKIT = str(Path(sys.executable).with_name("llbkit"))
# As installed for users: compiled bytecode is cached, not rebuilt on every start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _build(root: Path, data: bytes, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            LLBKIT,
            "--root",
            str(root),
            "build",
            "--progress",
            "quiet",
            "--output",
            f"type=local,dest={out}",
        ],
        input=data,
        check=True,
        env=ENV,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--graph",
        action="append",
        choices=sorted(GRAPHS),
        help="only this graph (repeatable); default: all",
    )
    args = parser.parse_args()
    print(f"{'graph':<12}{'cold s (median)':>18}{'warm s (median)':>18}")
    for name, make in GRAPHS.items():
        if args.graph and name not in args.graph:
            continue
        data = make(args.size).marshal(llb.Platform("linux", "amd64")).to_bytes()
        cold, warm = [], []
        for _ in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix="llbkit-bench-"))
            try:
                cold.append(_build(work / "root", data, work / "out1"))
                warm.append(_build(work / "root", data, work / "out2"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        label = f"{name}-{args.size}"
        print(f"{label:<12}{statistics.median(cold):>18.2f}{statistics.median(warm):>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
