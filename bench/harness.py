"""What both benchmark scripts share: the graphs' runs, settling the disk, the table."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from graphs import GRAPHS

from llbkit.sdk import llb

#: (work directory, definition, output directory or None) -> seconds
Build = Callable[[Path, bytes, Path | None], float]


def settle() -> None:
    """Let the disk finish the previous run's writes and deletions (ext4 online discard
    slows file creation for a while after large deletions), so runs do not pay for each other."""
    os.sync()
    time.sleep(2)


def timed(run: Callable[[], object]) -> float:
    settle()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main(doc: str, build: Build, before_cold: Callable[[], object] = lambda: None) -> int:
    """Parse ``--size/--runs/--graph``, run each graph cold, warm, and warm with an export."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
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
            before_cold()
            work = Path(tempfile.mkdtemp(prefix="bench-"))
            try:
                cold.append(build(work, data, work / "out1"))
                warm.append(build(work, data, None))
                export.append(build(work, data, work / "out2"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        print(
            f"{f'{name}-{args.size}':<12}{statistics.median(cold):>15.2f}"
            f"{statistics.median(warm):>10.2f}{statistics.median(export):>15.2f}"
        )
    return 0
