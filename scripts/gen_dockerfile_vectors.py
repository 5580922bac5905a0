#!/usr/bin/env python3
"""Record what BuildKit's dockerfile.v0 builds from each case in tests/dockerfiles/: the tree (a
tarball) and the image config (an OCI tarball), into tests/vectors/dockerfiles/<case>.json.

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/gen_dockerfile_vectors.py [case...]

Needs buildkitd v0.11.6 reaching 127.0.0.1:5055 over plain HTTP (``[registry."127.0.0.1:5055"]
http = true``), docker-registry and busybox-static. A case BuildKit refuses is recorded with
its error.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dockerfiles.compare import (  # noqa: E402
    BUILD_ARGS,
    SECRETS,
    URL_PORT,
    dumps,
    normalize_config,
    serve,
)
from tests.trees.listing import tar_listing  # noqa: E402


def _oci_config(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:

        def blob(digest: str) -> dict:
            member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return json.loads(member.read())

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = blob(index["manifests"][0]["digest"])
        return blob(manifest["config"]["digest"])


def main() -> int:
    from llbkit.sdk.testing.registry import (
        LocalRegistry,
        busybox_layer,
        push_image,
        push_rich_base,
    )

    buildctl = os.environ.get("BUILDCTL", "buildctl")
    for key, value in SECRETS.items():
        os.environ[f"LLBKIT_VECTOR_SECRET_{key}"] = value
    cases = ROOT / "tests" / "dockerfiles"
    names = sys.argv[1:] or sorted(p.name for p in cases.iterdir() if (p / "Dockerfile").exists())
    out_dir = ROOT / "tests" / "vectors" / "dockerfiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalRegistry(Path(tmp) / "r", port=5055) as reg,
        serve(cases, URL_PORT) as url_base,
    ):
        push_image(reg.host, "library/busybox:latest", [busybox_layer()])
        rich = push_rich_base(reg.host)
        args = {"BASE": f"{reg.host}/library/busybox", "RICH": rich, **BUILD_ARGS}
        for name in names:
            ctx = cases / name
            base = [
                buildctl,
                "build",
                "--frontend",
                "dockerfile.v0",
                "--local",
                f"context={ctx}",
                "--local",
                f"dockerfile={ctx}",
                "--progress",
                "plain",
            ]
            base += [f"--opt=build-arg:{k}={v}" for k, v in args.items()]
            base += [f"--opt=build-arg:URL_BASE={url_base}/{name}/served"]
            base += [f"--secret=id={k},env=LLBKIT_VECTOR_SECRET_{k}" for k in SECRETS]
            tar = subprocess.run(
                [*base, "--output", "type=tar,dest=-"], capture_output=True, check=False
            )
            if tar.returncode != 0:
                lines = tar.stderr.decode().strip().splitlines()
                record = {"error": lines[-1] if lines else "failed"}
            else:
                oci = subprocess.run(
                    [*base, "--output", "type=oci,dest=-"], capture_output=True, check=True
                )
                record = {
                    "tree": tar_listing(tar.stdout),
                    **normalize_config(_oci_config(oci.stdout)),
                }
            (out_dir / f"{name}.json").write_text(dumps(record))
            print(f"{name}: {'error' if 'error' in record else len(record['tree'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
