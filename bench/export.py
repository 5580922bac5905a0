"""Exporting a 156 MB layer of incompressible data (5,000 files) as an oci tarball with gzip,
after a warm build, with llbkit or with a real BuildKit.

    .venv/bin/python bench/export.py [--runs 3] [--engine llbkit|buildkit]

The first build (not timed) fills the cache; each timed run repeats it with the oci output
into a new file (BuildKit: after ``buildctl prune`` of nothing, so only the export is new).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import timed

LLBKIT = str(Path(sys.executable).with_name("llbkit"))
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BUILDCTL = os.environ.get("BUILDCTL", "buildctl")


def make_context(root: Path, files: int = 5000, total: int = 156 * 10**6) -> None:
    size = total // files
    for n in range(files):
        sub = root / f"d{n // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n:04d}.bin").write_bytes(os.urandom(size))
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /data/\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["llbkit", "buildkit"], default="llbkit")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        ctx = work / "ctx"
        make_context(ctx)
        if args.engine == "llbkit":
            base = [LLBKIT, "--root", str(work / "root"), "build", "--progress", "quiet"]
        else:
            base = [BUILDCTL, "build", "--progress", "plain"]
        base += [
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={ctx}",
        ]
        subprocess.run(base, check=True, capture_output=True, env=ENV)
        times = []
        for n in range(args.runs):
            if args.engine == "llbkit":
                # A fresh content store each time: the export computes its blobs again.
                shutil.rmtree(work / "root" / "content", ignore_errors=True)
                forget = (
                    "import sqlite3,sys; db=sqlite3.connect(sys.argv[1]); "
                    "db.execute('DELETE FROM blobs'); "
                    "db.execute('DROP TABLE IF EXISTS layer_blobs'); db.commit()"
                )
                state = str(work / "root" / "state.db")
                subprocess.run([sys.executable, "-c", forget, state], check=True)
                (work / "root" / "content" / "sha256").mkdir(parents=True, exist_ok=True)
            command = [*base, "--output", f"type=oci,dest={work / f'out{n}.tar'}"]
            times.append(
                timed(lambda c=command: subprocess.run(c, check=True, capture_output=True, env=ENV))
            )
        median = statistics.median(times)
        print(
            f"{args.engine}: export 156 MB as oci+gzip after a warm build {median:.2f} s "
            f"(median of {args.runs})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
