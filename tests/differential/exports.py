"""Differential cases of the exporters' options: one small build exported with each option
BuildKit's exporters read, with values they take and values they refuse, compared on what a
user sees — the ``--metadata-file`` answer and the archive's layout (``index.json``, the
manifest, docker's ``manifest.json``), or the error.

Compression makes blobs differ between tools (other encoders), so digests, sizes and times
are compared by shape: each distinct digest becomes ``<n>`` in order of appearance, each size
``<size>``, each time ``<time>``; with ``compression=uncompressed`` the shapes still show which
descriptors name the same blob."""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.differential.harness import VECTORS, error_cause

EXPORTS = VECTORS / "exports" / "exports.json"
#: exports llbkit answers otherwise on purpose: case -> what its error says (docs/compatibility.md)
DELIBERATE = {
    name: "compression-level="
    for name in ("export-oci-07", "export-oci-09", "export-docker-07", "export-docker-09")
}
#: the export that runs before the cases, on BuildKit and llbkit alike: the layers' blobs are
#: gzip from then on (BuildKit reuses a blob made before unless told force-compression)
WARM_OUTPUT = "type=oci,dest=@DEST@"
DOCKERFILE = "FROM @BASE@\nRUN echo built > /built\nLABEL a=b\n"
#: what one tool writes that the other does not, on purpose (docs/compatibility.md); also each
#: platform's ``containerimage.buildinfo/<platform>``
OWN_KEYS = ("containerimage.buildinfo", "llbkit.result.key")


@dataclass
class ExportCase:
    """An ``--output`` of the shared build: its attributes (``@DEST@`` a path the harness
    chooses, ``@REGISTRY@`` the registry's host)."""

    name: str
    output: str
    #: more buildctl flags for the build (``--opt multi-platform=true``)
    flags: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v != []}


def _cases() -> list[ExportCase]:
    found: list[ExportCase] = []

    def add(name: str, output: str) -> None:
        found.append(ExportCase(f"export-{name}", output))

    for kind in ("oci", "docker"):
        dest = f"type={kind},dest=@DEST@"
        add(f"{kind}-plain", dest)
        for n, attrs in enumerate(
            [
                "name=q",
                "name=a/b:1",
                '"name=a/b:1,c/d:2"',
                "compression=uncompressed",
                "compression=zstd",
                "compression=bogus",
                "compression=gzip,compression-level=0",
                "compression=gzip,compression-level=10",
                "compression=zstd,compression-level=22",
                "compression-level=abc",
                "force-compression=true",
                "force-compression=maybe",
                "oci-mediatypes=true",
                "oci-mediatypes=false",
                "oci-mediatypes=maybe",
                "annotation.k=v",
                "annotation-manifest.k=v",
                "annotation-manifest-descriptor.k=v",
                "annotation-index.k=v",
                "annotation-index-descriptor.k=v",
                "annotation[linux/amd64].k=v",
                "annotation[linux/arm64].k=v",
                "annotation[bogus].k=v",
                "annotation.org.opencontainers.image.created=1999",
                "name=q,name-canonical=true",
                "dangling-name-prefix=dangling",
            ]
        ):
            add(f"{kind}-{n:02d}", f"{dest},{attrs}")
    add("oci-dir", "type=oci,dest=@DEST@,tar=false")
    add("oci-dir-named", "type=oci,dest=@DEST@,tar=false,name=a/b:1")
    add("oci-tar-bogus", "type=oci,dest=@DEST@,tar=maybe")
    image = "type=image,name=@REGISTRY@/exp/img:1,push=true"
    add("image-push", image)
    for n, attrs in enumerate(
        [
            "oci-mediatypes=true",
            "compression=zstd",
            "compression=uncompressed",
            "name-canonical=true",
            "annotation.k=v",
            "annotation-index.k=v",
            "push-by-digest=true",
            "push=maybe",
        ]
    ):
        add(f"image-{n:02d}", f"{image},{attrs}")
    add("image-unnamed", "type=image,push=true")
    add("tar", "type=tar,dest=@DEST@")
    add("local", "type=local,dest=@DEST@")
    # The same build as a result by platform (of one): an index, a folder per platform.
    for name, output in (
        ("oci", "type=oci,dest=@DEST@"),
        ("oci-dir", "type=oci,dest=@DEST@,tar=false"),
        ("oci-named", "type=oci,dest=@DEST@,name=a/b:1"),
        ("oci-annotations", "type=oci,dest=@DEST@,annotation-index.k=v,annotation.m=n"),
        ("docker", "type=docker,dest=@DEST@"),
        ("image", f"{image},annotation-index.k=v"),
        ("tar", "type=tar,dest=@DEST@"),
        ("local", "type=local,dest=@DEST@"),
        ("local-unsplit", "type=local,dest=@DEST@,platform-split=false"),
    ):
        found.append(ExportCase(f"export-map-{name}", output, ["--opt", "multi-platform=true"]))
    return found


CASES = _cases()


def output_flag(case: ExportCase, dest: Path, registry: str) -> str:
    return case.output.replace("@DEST@", str(dest)).replace("@REGISTRY@", registry)


class _Shapes:
    """Digests, sizes and times replaced by their shape (see the module's docstring)."""

    def __init__(self, registry: str) -> None:
        self.registry = registry
        self.digests: dict[str, str] = {}

    def text(self, value: str) -> str:
        value = value.replace(self.registry, "REGISTRY")
        value = re.sub(r"sha256:[0-9a-f]{64}", lambda m: self.digest(m.group(0)), value)
        value = re.sub(
            r"(?<=blobs/sha256/)[0-9a-f]{64}", lambda m: self.digest("sha256:" + m.group(0)), value
        )
        if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", value):
            return "<time>"
        return value

    def digest(self, digest: str) -> str:
        return self.digests.setdefault(digest, f"<{len(self.digests)}>")

    def of(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: "<size>" if k in ("size", "Size") and isinstance(v, int) else self.of(v)
                for k, v in sorted(value.items())
            }
        if isinstance(value, list):
            return [self.of(v) for v in value]
        if isinstance(value, str):
            if value.startswith(("{", "[")):
                try:
                    return self.of(json.loads(value))
                except ValueError:
                    pass
            return self.text(value)
        return value


def _archive(path: Path, shapes: _Shapes) -> dict[str, Any]:
    """The layout of an oci or docker archive (or oci directory): its file names, and its
    index, manifests and docker's manifest.json by shape."""
    files: dict[str, bytes] = {}
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_file():
                files[str(item.relative_to(path))] = item.read_bytes()
    else:
        with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
            for member in tar:
                if member.isfile():
                    body = tar.extractfile(member)
                    files[member.name] = body.read() if body else b""
    found: dict[str, Any] = {"files": sorted({re.sub(r"[0-9a-f]{64}", "*", n) for n in files})}
    for name in ("index.json", "manifest.json", "oci-layout", "repositories"):
        if name in files:
            found[name] = shapes.of(json.loads(files[name]))
    if "index.json" in files:
        manifests = []
        for entry in json.loads(files["index.json"]).get("manifests") or []:
            blob = files.get("blobs/sha256/" + entry["digest"].split(":")[1])
            if blob is not None:
                manifests.append(shapes.of(json.loads(blob)))
        found["manifests"] = manifests
    return found


def export_result(
    metadata: dict[str, Any], dest: Path, case: ExportCase, registry: str
) -> dict[str, Any]:
    """What a successful export is compared on."""
    shapes = _Shapes(registry)
    answer = {
        k: v
        for k, v in metadata.items()
        if k not in OWN_KEYS and not k.startswith("containerimage.buildinfo/")
    }
    found: dict[str, Any] = {"metadata": shapes.of(answer)}
    kind = case.output.split(",", 1)[0]
    if kind in ("type=oci", "type=docker") and dest.exists():
        found["archive"] = _archive(dest, shapes)
        if dest.is_dir():
            # llbkit writes a folder's oci-layout file, which the OCI layout spec asks for and
            # buildctl v0.11 leaves out (docs/compatibility.md, deliberate differences).
            found["archive"]["files"] = [f for f in found["archive"]["files"] if f != "oci-layout"]
            found["archive"].pop("oci-layout", None)
    return found


def export_error(text: str, registry: str) -> str:
    return error_cause(text, registry)


def load_exports() -> list[tuple[ExportCase, dict[str, Any]]]:
    if not EXPORTS.exists():
        return []
    return [
        (ExportCase(item["name"], item["output"], item.get("flags", [])), item["result"])
        for item in json.loads(EXPORTS.read_text())["cases"]
    ]
