"""A hostile image read through ``--oci-layout``: a whiteout naming the directory it is in (or
its parent) is refused in one line, and nothing around the tree is deleted."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.hostile.cli import dockerfile_build, error_line


def _blob(store: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(*names: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info, io.BytesIO(b"") if not name.endswith("/") else None)
    return gzip.compress(out.getvalue(), mtime=0)


def write_image(store: Path, layers: list[bytes], config: dict[str, object]) -> dict[str, object]:
    """An image of gzipped ``layers`` and ``config`` (its rootfs added) written into
    ``store``'s blobs; returns its manifest's descriptor."""
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(x)).hexdigest() for x in layers]
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(store, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(store, x)}
            for x in layers
        ],
    }
    return {"mediaType": manifest["mediaType"], **_blob(store, json.dumps(manifest).encode())}


def layout(store: Path, layers: list[bytes]) -> str:
    """An OCI layout of one linux/amd64 image; returns its manifest digest."""
    (store / "blobs" / "sha256").mkdir(parents=True)
    (store / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    found = write_image(store, layers, {"architecture": "amd64", "os": "linux", "config": {}})
    (store / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [found]}))
    return str(found["digest"])


@pytest.mark.parametrize("whiteout", [".wh..", ".wh..."])
def test_a_whiteout_naming_its_own_directory_is_refused(tmp_path: Path, whiteout: str) -> None:
    store = tmp_path / "store"
    digest = layout(store, [_layer("a/", "a/f", "b/"), _layer(f"a/{whiteout}")])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nCOPY --from=base /a /a\n")
    root = tmp_path / "root"
    done = dockerfile_build(
        root,
        ctx,
        "--oci-layout",
        f"store={store}",
        "--opt",
        f"context:base=oci-layout://store@{digest}",
    )
    assert f"invalid whiteout name: {whiteout}: invalid archive" in error_line(done)
    assert (root / "tmp").is_dir() and (root / "content").is_dir()  # nothing above was deleted


def _build(tmp_path: Path, store: Path, digest: str) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\n")
    return error_line(
        dockerfile_build(
            tmp_path / "root",
            ctx,
            "--oci-layout",
            f"store={store}",
            "--opt",
            f"context:base=oci-layout://store@{digest}",
        )
    )


def _manifest(store: Path, manifest: object) -> str:
    (store / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if isinstance(manifest, dict) and "layers" in manifest:
        # A config that is there: the image's config is read (for the stage) before its layers.
        manifest = {**manifest, "config": _blob(store, b"{}")}
    return str(_blob(store, json.dumps(manifest).encode())["digest"])


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        # A layer "digest" that is a path: /dev/zero would be read for ever.
        ({"layers": [{"digest": "sha256:../../../../../dev/zero"}]}, "is not a sha256 digest"),
        ({"manifests": [{"digest": "sha256:../../x", "platform": {}}]}, "no image for"),
        ({"manifests": "x"}, "manifests is not a list of objects"),
        ({"layers": {"a": 1}}, "layers is not a list of objects"),
        ([1, 2], "is not a JSON object"),
    ],
)
def test_a_hostile_layout_manifest_is_one_line(
    tmp_path: Path, manifest: object, message: str
) -> None:
    store = tmp_path / "store"
    assert message in _build(tmp_path, store, _manifest(store, manifest))


def test_an_index_naming_a_path_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    index = {
        "manifests": [
            {
                "digest": "sha256:../../../../../dev/zero",
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ]
    }
    assert "'sha256:../../../../../dev/zero' is not a sha256 digest" in _build(
        tmp_path, store, _manifest(store, index)
    )


def test_a_manifest_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    """200 kB of arrays 100,000 deep: Python's json reads them by recursion (a traceback)."""
    store = tmp_path / "store"
    (store / "blobs" / "sha256").mkdir(parents=True)
    (store / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    found = _blob(store, b"[" * 100_000 + b"]" * 100_000)
    kind = "application/vnd.oci.image.manifest.v1+json"
    index = {"schemaVersion": 2, "manifests": [{"mediaType": kind, **found}]}
    (store / "index.json").write_text(json.dumps(index))
    assert _build(tmp_path, store, str(found["digest"])).endswith(" is not a JSON object")
