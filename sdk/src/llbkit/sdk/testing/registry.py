"""A real OCI registry on loopback for tests, and pushing small images into it.

Runs Debian's ``docker-registry`` (distribution v2) on a free 127.0.0.1 port with its storage in a
temporary directory. :func:`busybox_layer` makes a base image from the host's static busybox.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["LocalRegistry", "busybox_layer", "layer_tar", "push_image", "push_index"]

BUSYBOX_APPLETS = (
    "sh",
    "echo",
    "ls",
    "cat",
    "true",
    "false",
    "mkdir",
    "touch",
    "id",
    "env",
    "pwd",
    "sleep",
    "wc",
    "test",
    "rm",
    "cp",
    "chmod",
    "stat",
    "head",
    "tail",
    "printf",
    "grep",
    "whoami",
    "hostname",
    "mount",
    "seq",
    "dd",
    "ln",
    "readlink",
    "find",
    "sort",
    "tr",
    "uname",
    "date",
    "yes",
    "touch",
    "xargs",
    "basename",
    "dirname",
    "expr",
    "sed",
    "awk",
    "tee",
)


@dataclass
class LocalRegistry:
    """``docker-registry serve`` on loopback; use as a context manager."""

    root: Path
    port: int = 0
    htpasswd: Path | None = None
    #: serve HTTPS with this certificate and key (PEM files), requiring client certificates
    #: signed by ``client_cas`` if any are given
    tls: tuple[Path, Path] | None = None
    client_cas: Sequence[Path] = ()
    #: where the images are kept (default ``root/data``): another registry's, to serve them too
    data: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalRegistry:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        self.root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.htpasswd is not None:
            auth = f"auth: {{htpasswd: {{realm: test-registry, path: {self.htpasswd}}}}}\n"
        config = self.root / "config.yml"
        tls = ""
        if self.tls is not None:
            cas = ", ".join(str(p) for p in self.client_cas)
            tls = f", tls: {{certificate: {self.tls[0]}, key: {self.tls[1]}, clientcas: [{cas}]}}"
        config.write_text(
            "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.data or self.root / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: {self.host}{tls}}}\n{auth}"
        )
        self._proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._answers():
                    return self
            except (httpx.HTTPError, OSError):
                time.sleep(0.02)
        self.__exit__()
        raise RuntimeError("docker-registry did not start")

    def _answers(self) -> bool:
        if self.tls is None:
            return httpx.get(f"http://{self.host}/v2/").status_code in (200, 401)
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True  # listening: a TLS probe would need a client certificate

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
            self._proc = None


def layer_tar(entries: Mapping[str, bytes | str | None], *, gzipped: bool = True) -> bytes:
    """A layer from ``{path: content}``: bytes make a file (0755 under ``bin/``, else 0644),
    ``"->target"`` a symlink, ``None`` a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            elif isinstance(content, str) and content.startswith("->"):
                info.type = tarfile.SYMTYPE
                info.linkname = content[2:]
                info.mode = 0o777
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size = len(data)
                info.mode = 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gzipped else raw


def busybox_layer() -> bytes:
    """``/bin/busybox`` (static) with applet links, ``/etc/passwd`` and ``/etc/group``."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    entries: dict[str, bytes | str | None] = {"bin": None, "etc": None, "tmp": None}
    entries["bin/busybox"] = Path(busybox).read_bytes()
    for applet in BUSYBOX_APPLETS:
        entries[f"bin/{applet}"] = "->busybox"
    entries["etc/passwd"] = (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        "builder:x:1000:1000:builder:/home/builder:/bin/sh\n"
    )
    entries["etc/group"] = "root:x:0:\nnogroup:x:65534:\nbuilder:x:1000:\nextra:x:2000:builder\n"
    return layer_tar(entries)


#: the config of :func:`push_rich_base`: an image that sets every inheritable field
RICH_CONFIG = {
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "BASEVAR=1"],
        "User": "builder",
        "WorkingDir": "/home/builder",
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default"],
        "Labels": {"base": "yes", "overridden": "base"},
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/cache": {}},
        "StopSignal": "SIGINT",
    },
}


def push_rich_base(registry: str) -> str:
    """Push ``library/rich``: busybox with :data:`RICH_CONFIG`; return its reference."""
    home = layer_tar({"home": None, "home/builder": None})
    push_image(registry, "library/rich:latest", [busybox_layer(), home], RICH_CONFIG)
    return f"{registry}/library/rich"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(client: httpx.Client, base: str, repo: str, data: bytes) -> str:
    digest = _digest(data)
    if client.head(f"{base}/v2/{repo}/blobs/{digest}").status_code == 200:
        return digest
    start = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    start.raise_for_status()
    location = start.headers["location"]
    if location.startswith("/"):
        location = base + location
    # The location carries a _state query: append the digest rather than replacing it.
    joiner = "&" if "?" in location else "?"
    done = client.put(
        f"{location}{joiner}digest={digest}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    done.raise_for_status()
    return digest


def push_image(
    registry: str,
    name: str,
    layers: Sequence[bytes],
    config: Mapping[str, Any] | None = None,
    *,
    platform: tuple[str, str] = ("linux", "amd64"),
    auth: tuple[str, str] | None = None,
) -> str:
    """Push an image made of gzipped ``layers`` as ``registry/name``; return its manifest digest."""
    repo, _, tag = name.partition(":")
    with httpx.Client(auth=auth, timeout=30) as client:
        digest, _ = _push_manifest(
            client,
            f"http://{registry}",
            repo,
            tag or "latest",
            layers=layers,
            config=config,
            platform=platform,
        )
    return digest


def push_index(
    registry: str,
    name: str,
    images: Sequence[tuple[Mapping[str, str], Sequence[bytes], Mapping[str, Any] | None]],
) -> str:
    """Push a multi-platform image as ``registry/name``: an OCI index of one manifest per
    ``(platform, layers, config)`` (``platform`` as an index names it: ``os``,
    ``architecture``, optional ``variant``); return the index's digest."""
    repo, _, tag = name.partition(":")
    base = f"http://{registry}"
    entries = []
    with httpx.Client(timeout=30) as client:
        for platform, layers, config in images:
            pair = (platform["os"], platform["architecture"])
            variant = {"variant": platform["variant"]} if platform.get("variant") else {}
            digest, size = _push_manifest(
                client,
                base,
                repo,
                None,
                layers=layers,
                config={**variant, **(config or {})},
                platform=pair,
            )
            entries.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": size,
                    "platform": dict(platform),
                }
            )
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": entries,
            }
        ).encode()
        put = client.put(
            f"{base}/v2/{repo}/manifests/{tag or 'latest'}",
            content=body,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        put.raise_for_status()
    return _digest(body)


def _push_manifest(
    client: httpx.Client,
    base: str,
    repo: str,
    tag: str | None,
    *,
    layers: Sequence[bytes],
    config: Mapping[str, Any] | None,
    platform: tuple[str, str],
) -> tuple[str, int]:
    """Push an image's blobs and manifest (under ``tag``, else by digest): its digest, size."""
    diff_ids = [_digest(gzip.decompress(layer)) for layer in layers]
    image_config = {
        "architecture": platform[1],
        "os": platform[0],
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        **(config or {}),
    }
    config_bytes = json.dumps(image_config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _upload(client, base, repo, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _upload(client, base, repo, layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    body = json.dumps(manifest).encode()
    put = client.put(
        f"{base}/v2/{repo}/manifests/{tag or _digest(body)}",
        content=body,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    put.raise_for_status()
    return _digest(body), len(body)


def registry_env(home: Path, registry: str, user: str, password: str) -> dict[str, str]:
    """``DOCKER_CONFIG`` pointing at credentials for ``registry``, as ``docker login`` writes."""
    import base64

    home.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (home / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    return {**os.environ, "DOCKER_CONFIG": str(home)}
