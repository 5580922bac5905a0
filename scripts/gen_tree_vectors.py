#!/usr/bin/env python3
"""Record what BuildKit builds from each tree case into tests/vectors/trees/<case>.json.

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/gen_tree_vectors.py [case...]

Needs a running buildkitd (v0.11.6, OCI worker, as root) that reaches 127.0.0.1:5055 over
plain HTTP and grants ``security.insecure`` (``--allow-insecure-entitlement``), and Debian's
docker-registry and busybox-static for the exec cases' base image.
A case BuildKit refuses is recorded with its error, so llbkit can be checked to refuse it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.trees.cases import CASES, definition  # noqa: E402
from tests.trees.context import make_context  # noqa: E402
from tests.trees.exec_cases import ENTITLEMENTS, EXEC_CASES, exec_definition  # noqa: E402
from tests.trees.listing import tar_listing  # noqa: E402


def main() -> int:
    buildctl = os.environ.get("BUILDCTL", "buildctl")
    names = sys.argv[1:] or sorted(CASES) + sorted(EXEC_CASES)
    with tempfile.TemporaryDirectory() as tmp, _busybox(Path(tmp)) as image:
        ctx = make_context(Path(tmp))
        for name in names:
            out = Path(tmp) / f"out-{name}"
            data = exec_definition(name, image) if name in EXEC_CASES else definition(name)
            command = [
                buildctl,
                "build",
                "--progress",
                "plain",
                "--local",
                f"context={ctx}",
                "--output",
                f"type=tar,dest={out}",
                *(f"--allow={e}" for e in ENTITLEMENTS.get(name, [])),
            ]
            done = subprocess.run(command, input=data, capture_output=True, check=False)
            if done.returncode == 0:
                record = {"tree": tar_listing(out.read_bytes())}
            else:
                lines = done.stderr.decode().strip().splitlines()
                record = {"error": lines[-1] if lines else "failed"}
            target = ROOT / "tests" / "vectors" / "trees" / f"{name}.json"
            target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"{name}: {'error' if 'error' in record else len(record['tree'])}")
    return 0


@contextmanager
def _busybox(tmp: Path) -> Iterator[str]:
    """The exec cases' base image, in a registry on the port BuildKit was told is plain HTTP
    (``[registry."127.0.0.1:5055"] http = true``; ``REGISTRY_PORT`` to change it)."""
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image

    port = int(os.environ.get("REGISTRY_PORT", "5055"))
    with LocalRegistry(tmp / "registry", port=port) as registry:
        push_image(registry.host, "library/busybox:latest", [busybox_layer()])
        yield f"{registry.host}/library/busybox"


if __name__ == "__main__":
    sys.exit(main())
