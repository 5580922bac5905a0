#!/usr/bin/env python3
"""Generate the containerd worker's gRPC client from the containerd API `.proto` files Debian
ships (golang-github-containerd-containerd-dev), into
plugins/worker_containerd/src/llbkit/plugins/worker_containerd/_pb/.

    .venv/bin/python scripts/gen_containerd_proto.py [OUT_DIR]   (default: in place)

The files are staged under the package's own path, so the modules import each other as
``llbkit.plugins.worker_containerd._pb...`` rather than as a top-level ``github`` package; the
gogoproto and fieldpath options (Go code generation only, nothing on the wire) are dropped with
their weak imports. Message and service names stay containerd's. tests/test_generated.py runs
this and fails when the committed modules are stale.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API = Path("/usr/share/gocode/src/github.com/containerd/containerd/api")
PACKAGE = "llbkit/plugins/worker_containerd/_pb"
#: what the worker talks to; events and introspection (which need google.rpc) are left out
PROTOS = [
    "types/descriptor.proto",
    "types/metrics.proto",
    "types/mount.proto",
    "types/platform.proto",
    "types/task/task.proto",
    "services/containers/v1/containers.proto",
    "services/content/v1/content.proto",
    "services/diff/v1/diff.proto",
    "services/images/v1/images.proto",
    "services/leases/v1/leases.proto",
    "services/namespaces/v1/namespace.proto",
    "services/snapshots/v1/snapshots.proto",
    "services/tasks/v1/tasks.proto",
    "services/version/v1/version.proto",
]
HEADER = "# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_containerd_proto.py\n"


def _staged(text: str) -> str:
    """A proto without Go-only options, importing its siblings by their staged path."""
    text = re.sub(r'^import weak "[^"]+";\n', "", text, flags=re.M)
    text = re.sub(r"^\s*option \((gogoproto|containerd\.plugin)\.[^;]*;\n", "", text, flags=re.M)
    # Field and enum value options: each bracket here holds only gogoproto's.
    text = re.sub(r"\s*\[\s*\(gogoproto\.[^\]]*\]", "", text)
    return text.replace('import "github.com/containerd/containerd/api/', f'import "{PACKAGE}/')


def main(out: Path) -> int:
    if not API.is_dir():
        print(
            f"gen_containerd_proto: {API} is missing; apt-get install "
            "golang-github-containerd-containerd-dev",
            file=sys.stderr,
        )
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for rel in PROTOS:
            target = staging / PACKAGE / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_staged((API / rel).read_text()))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                "-I",
                str(staging),
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                *[f"{PACKAGE}/{rel}" for rel in PROTOS],
            ],
            check=True,
        )
    for path in sorted((out / PACKAGE).rglob("*_pb2*.py*")):
        if path.name.endswith("_pb2_grpc.py") and "Stub" not in path.read_text():
            path.unlink()  # a file that declares no service
            continue
        path.write_text(HEADER + path.read_text())
    return 0


if __name__ == "__main__":
    default = ROOT / "plugins/worker_containerd/src"
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
