"""The same cold/warm builds with a real BuildKit, for the figures beside llbkit's.

    BUILDCTL=buildctl BUILDKIT_HOST=unix:///run/buildkit/buildkitd.sock \\
        .venv/bin/python bench/buildkit.py [--size 1000] [--runs 3]

Cold: after ``buildctl prune --all``, exporting to a new directory; warm: the same build
without an output, then with one, as ``bench/engine.py`` measures llbkit.
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

BUILDCTL = os.environ.get("BUILDCTL", "buildctl")


def _settle() -> None:
    """Let the disk finish the previous run's writes and deletions (ext4 online discard
    slows file creation for a while after large deletions), so runs do not pay for each other."""
    os.sync()
    time.sleep(2)


def _build(data: bytes, out: Path | None) -> float:
    _settle()
    start = time.perf_counter()
    output = ["--output", f"type=local,dest={out}"] if out is not None else []
    subprocess.run(
        [BUILDCTL, "build", "--progress", "plain", *output],
        input=data,
        check=True,
        capture_output=True,
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
            subprocess.run([BUILDCTL, "prune", "--all"], check=True, capture_output=True)
            work = Path(tempfile.mkdtemp(prefix="buildkit-bench-"))
            try:
                cold.append(_build(data, work / "out1"))
                warm.append(_build(data, None))
                export.append(_build(data, work / "out2"))
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
