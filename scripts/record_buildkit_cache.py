#!/usr/bin/env python3
"""Record the caches tests/test_cache_from_buildkit.py imports: BuildKit building that test's
Dockerfile on its base image, with ``--export-cache type=local`` in ``mode=max`` and
``mode=min``, into tests/vectors/buildkit-cache/{max,min}, without the base layer's blob (the
test's image supplies it).

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/record_buildkit_cache.py

Needs buildkitd v0.11.6 reaching 127.0.0.1:5155 (or ``--port``) over plain HTTP, docker-registry
and busybox-static, and nothing else building on that buildkitd: its cache is pruned.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_cache_from_buildkit import VECTORS, context_dir, push_busybox  # noqa: E402


def main() -> int:
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("REGISTRY_PORT", "5155")))
    args = parser.parse_args()
    buildctl = os.environ.get("BUILDCTL", "buildctl")
    base = hashlib.sha256(busybox_layer()).hexdigest()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalRegistry(Path(tmp) / "r", port=args.port) as reg,
    ):
        push_busybox(reg.host)
        ctx = context_dir(Path(tmp) / "ctx")
        for mode in ("max", "min"):
            subprocess.run([buildctl, "prune", "--all"], capture_output=True, check=True)
            dest = Path(tmp) / mode
            subprocess.run(
                [
                    buildctl,
                    "build",
                    "--frontend",
                    "dockerfile.v0",
                    "--local",
                    f"context={ctx}",
                    "--local",
                    f"dockerfile={ctx}",
                    "--opt",
                    f"build-arg:BASE={reg.host}/library/busybox",
                    "--export-cache",
                    f"type=local,dest={dest},mode={mode}",
                ],
                check=True,
            )
            (dest / "blobs" / "sha256" / base).unlink()
            shutil.rmtree(VECTORS / mode, ignore_errors=True)
            shutil.copytree(dest, VECTORS / mode)
            for path in (VECTORS / mode).rglob("*"):
                path.chmod(0o755 if path.is_dir() else 0o644)
    print(f"recorded {VECTORS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
