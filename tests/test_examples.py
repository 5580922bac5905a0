"""The examples the README points at run and produce what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_hello_llb_writes_a_definition_dump_llb_reads():
    made = subprocess.run(
        [sys.executable, str(ROOT / "examples/hello_llb.py")], capture_output=True
    )
    assert made.returncode == 0, made.stderr
    dumped = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "debug", "dump-llb"],
        input=made.stdout,
        capture_output=True,
    )
    assert dumped.returncode == 0, dumped.stderr
    objects = [json.loads(line) for line in dumped.stdout.splitlines()]
    kinds = [next(iter(o["Op"]["Op"] or {"terminal": None})) for o in objects]
    assert kinds == ["source", "exec", "file", "file", "merge", "terminal"]
    cache = objects[1]["Op"]["Op"]["exec"]["mounts"][1]
    assert cache["cacheOpt"] == {"ID": "demo-cache", "sharing": 2}


def test_site_example_builds_with_the_embedded_engine(tmp_path):
    made = subprocess.run([sys.executable, str(ROOT / "examples/site_llb.py")], capture_output=True)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "site"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "llbkit.core",
            "--root",
            str(tmp_path / "state"),
            "build",
            "--progress",
            "plain",
            "--local",
            f"site={ROOT / 'examples/site'}",
            "--output",
            f"type=local,dest={out}",
        ],
        input=made.stdout,
        capture_output=True,
    )
    assert built.returncode == 0, built.stderr
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["www", "www/about.md", "www/index.md", "www/meta", "www/meta/robots.txt"]
