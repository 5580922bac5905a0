"""Cold and warm builds of the wide and chain graphs with ``llbkit build``, as a user runs them.

    .venv/bin/python bench/engine.py [--size 1000] [--runs 3]

Each cold run uses a new state root and exports to a new directory; then the same build runs
warm without an output, and warm again exporting to another new directory.
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


def _settle() -> None:
    """Let the disk finish the previous run's writes and deletions (ext4 online discard
    slows file creation for a while after large deletions), so runs do not pay for each other."""
    os.sync()
    time.sleep(2)


def _build(root: Path, data: bytes, out: Path | None) -> float:
    _settle()
    start = time.perf_counter()
    output = ["--output", f"type=local,dest={out}"] if out is not None else []
    subprocess.run(
        [LLBKIT, "--root", str(root), "build", "--progress", "quiet", *output],
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
    print(f"{'graph':<12}{'cold+export s':>15}{'warm s':>10}{'warm+export s':>15}  (medians)")
    for name, make in GRAPHS.items():
        if args.graph and name not in args.graph:
            continue
        data = make(args.size).marshal(llb.Platform("linux", "amd64")).to_bytes()
        cold: list[float] = []
        warm: list[float] = []
        export: list[float] = []
        for _ in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix="llbkit-bench-"))
            try:
                cold.append(_build(work / "root", data, work / "out1"))
                warm.append(_build(work / "root", data, None))
                export.append(_build(work / "root", data, work / "out2"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        label = f"{name}-{args.size}"
        print(
            f"{label:<12}{statistics.median(cold):>15.2f}{statistics.median(warm):>10.2f}"
            f"{statistics.median(export):>15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
