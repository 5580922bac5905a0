"""A chain of exec steps on busybox, cold, with llbkit or with a real BuildKit.

    .venv/bin/python bench/exec.py [--steps 30] [--runs 3] [--engine llbkit|buildkit]

Starts Debian's docker-registry on loopback and pushes a busybox image built from the host's
static busybox; every cold run pulls it (llbkit: a new state root; BuildKit: after
``buildctl prune --all``, with ``BUILDCTL`` and ``BUILDKIT_HOST`` set, and the registry's
host marked ``http = true`` in its buildkitd.toml or reachable as localhost).
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

from graphs import exec_chain
from harness import timed

from llbkit.sdk import llb
from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image

LLBKIT = str(Path(sys.executable).with_name("llbkit"))
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BUILDCTL = os.environ.get("BUILDCTL", "buildctl")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["llbkit", "buildkit"], default="llbkit")
    parser.add_argument("--port", type=int, default=0, help="registry port (0: any free one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    try:
        with LocalRegistry(work / "registry", port=args.port) as registry:
            push_image(registry.host, "library/busybox:latest", [busybox_layer()])
            data = (
                exec_chain(args.steps, f"{registry.host}/library/busybox")
                .marshal(llb.Platform("linux", "amd64"))
                .to_bytes()
            )
            cold = []
            for n in range(args.runs):
                if args.engine == "llbkit":
                    command = [
                        LLBKIT,
                        "--root",
                        str(work / f"root{n}"),
                        "build",
                        "--progress",
                        "quiet",
                    ]
                else:
                    subprocess.run([BUILDCTL, "prune", "--all"], check=True, capture_output=True)
                    command = [BUILDCTL, "build", "--progress", "plain"]
                cold.append(
                    timed(
                        lambda c=command: subprocess.run(
                            c, input=data, check=True, capture_output=True, env=ENV
                        )
                    )
                )
        median = statistics.median(cold)
        print(
            f"{args.engine}: exec-chain-{args.steps} cold {median:.2f} s "
            f"({median / args.steps * 1000:.0f} ms a step), median of {args.runs}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
