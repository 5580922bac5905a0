"""Pack a root filesystem (a debootstrap directory) as a one-layer OCI image layout, and print
the manifest digest a build names it by. Standard library only; run as root, so that owners,
modes and special files are read as they are.

    python3 deploy/image/rootfs_layout.py ROOTFS LAYOUT
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile
from pathlib import Path

#: the OCI name of this machine's architecture (the image's, as debootstrap made it here)
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
#: left empty in the image: what the container runtime provides, and caches
EMPTIED = ("dev", "proc", "sys", "run", "tmp", "var/cache/apt/archives", "var/lib/apt/lists")


def _layer(rootfs: Path) -> bytes:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(info.name.startswith(f"{top}/") for top in EMPTIED):
            return None  # (and, for a directory, what is beneath it)
        info.uname = info.gname = ""  # the numbers are what the image means
        return info

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(rootfs)):
            tar.add(rootfs / entry, arcname=entry, filter=keep)
    return raw.getvalue()


def _put(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    rootfs, layout = Path(sys.argv[1]), Path(sys.argv[2])
    if not (rootfs / "etc" / "os-release").exists():
        print(f"rootfs_layout: {rootfs} is not a root filesystem", file=sys.stderr)
        return 1
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    tar = _layer(rootfs)
    layer, layer_size = _put(blobs, gzip.compress(tar, compresslevel=6, mtime=0))
    config = json.dumps(
        {
            "architecture": ARCH,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["bash"],
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        },
        separators=(",", ":"),
    ).encode()
    config_digest, config_size = _put(blobs, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer,
                    "size": layer_size,
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    digest, size = _put(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": "bookworm"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
