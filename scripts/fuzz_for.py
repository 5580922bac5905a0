"""Run the hostile-input fuzzers of ``tests/hostile/test_fuzz.py`` for a wall-clock budget each.

Hypothesis counts examples, not time, so each fuzzer runs in rounds — a fresh seed per round,
``--examples`` inputs each — until its budget is spent. Every round's seed, example count and
outcome is printed as one line (and appended to ``--log``), so that a run is recorded and any
failure can be replayed with its seed::

    .venv/bin/python scripts/fuzz_for.py --minutes 30 --seed 20261130 --log fuzz.log

The fuzzers run side by side, one process each; ``--jobs`` bounds how many at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

ROOT = Path(__file__).resolve().parent.parent
SUITE = "tests/hostile/test_fuzz.py"
FUZZERS = (
    "test_dockerfiles_convert_or_are_refused_in_one_line",
    "test_words_expand_or_are_refused",
    "test_mutated_definitions_load_or_are_refused",
    "test_random_bytes_are_no_definition",
    "test_layers_stay_in_their_tree",
    "test_configs_load_or_are_refused_in_one_line",
)


@dataclass
class Tally:
    """What one fuzzer did in its budget."""

    name: str
    rounds: int = 0
    examples: int = 0
    failed: int = 0


def _round(name: str, seed: int, examples: int, env: dict[str, str]) -> tuple[bool, int, str]:
    """One round: whether it passed, how many examples Hypothesis ran, and its output's tail."""
    # A private temporary root per round: pytest's clean-up of older ones never meets what
    # another suite left there.
    base = Path(tempfile.mkdtemp(prefix=f"fuzz-{seed}-"))
    try:
        return _run(name, seed, examples, env, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(
    name: str, seed: int, examples: int, env: dict[str, str], base: Path
) -> tuple[bool, int, str]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{SUITE}::{name}",
            f"--hypothesis-seed={seed}",
            "--hypothesis-show-statistics",
            f"--basetemp={base / 'tmp'}",
        ],
        cwd=ROOT,
        env=env | {"LLBKIT_FUZZ_EXAMPLES": str(examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    out = run.stdout + run.stderr
    ran = sum(int(n) for n in re.findall(r"(\d+) passing, ", out))
    return run.returncode == 0, ran, out[-4000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="budget per fuzzer")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="the first seed")
    parser.add_argument("--examples", type=int, default=5000, help="examples per round")
    parser.add_argument("--jobs", type=int, default=len(FUZZERS), help="fuzzers at once")
    parser.add_argument("--only", action="append", default=[], help="a fuzzer's test name")
    parser.add_argument("--log", type=Path, help="append every round's line to this file")
    options = parser.parse_args()
    names = options.only or list(FUZZERS)
    lock = Lock()
    env = dict(os.environ)

    def say(line: str) -> None:
        with lock:
            print(line, flush=True)
            if options.log is not None:
                with options.log.open("a") as log:
                    log.write(line + "\n")

    def fuzz(index: int, name: str) -> Tally:
        tally = Tally(name)
        end = time.monotonic() + options.minutes * 60
        seed = options.seed + 1000 * index
        while time.monotonic() < end:
            ok, ran, tail = _round(name, seed, options.examples, env)
            tally.rounds += 1
            tally.examples += ran
            say(f"{name} seed={seed} examples={ran} {'ok' if ok else 'FAILED'}")
            if not ok:
                tally.failed += 1
                say(tail)
            seed += 1
        return tally

    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        tallies = list(pool.map(lambda pair: fuzz(*pair), enumerate(names)))
    for tally in tallies:
        say(
            f"total {tally.name}: {tally.rounds} rounds, {tally.examples} examples, "
            f"{tally.failed} failed"
        )
    return 1 if any(t.failed for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
