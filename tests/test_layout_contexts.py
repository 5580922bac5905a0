"""A named context that is an OCI layout (``--oci-layout store=… --opt
context:base=oci-layout://store@DIGEST``): the stage takes the layout image's config, and an
image built on it exports the layout's own layers, as BuildKit's does."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.control.layout_images import WithLayouts
from llbkit.core.plugins.context import Platform
from llbkit.core.plugins.source import ImageConfig
from tests.hostile.cli import dockerfile_build
from tests.hostile.test_oci_layout import _blob, _layer, write_image

pytestmark = pytest.mark.root


def _image(store: Path, layers: list[bytes], arch: str) -> dict[str, object]:
    """An image of ``layers`` for linux/``arch`` in ``store``: its manifest's descriptor."""
    config = {"Env": ["PATH=/bin", f"ARCH={arch}"], "WorkingDir": "/w", "Cmd": ["run"]}
    found = write_image(store, layers, {"architecture": arch, "os": "linux", "config": config})
    return {**found, "platform": {"os": "linux", "architecture": arch}}


def _index(store: Path) -> tuple[str, list[bytes]]:
    """A layout whose index has an amd64 image of two layers and an arm64 one; the index's
    digest and the amd64 image's layers."""
    (store / "blobs" / "sha256").mkdir(parents=True)
    (store / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layers = [_layer("a/", "a/f"), _layer("b/", "b/g")]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [_image(store, layers, "amd64"), _image(store, [_layer("c")], "arm64")],
    }
    found = _blob(store, json.dumps(index).encode())
    (store / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [found]}))
    return str(found["digest"]), layers


def test_an_image_on_a_layout_context_exports_the_layouts_layers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    digest, layers = _index(store)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nENV MORE=1\n")
    out = tmp_path / "out.tar"
    done = dockerfile_build(
        tmp_path / "root",
        ctx,
        *["--oci-layout", f"store={store}"],
        *["--opt", f"context:base=oci-layout://store@{digest}"],
        *["--output", f"type=oci,dest={out}"],
    )
    assert done.returncode == 0, done.stderr
    assert "[context base] OCI load from client" in done.stderr
    assert f"[context base] load metadata for docker.io/library/base@{digest}" in done.stderr
    with tarfile.open(out) as tar:

        def blob(digest: str) -> dict[str, object]:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return json.loads(member.read())

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = blob(index["manifests"][0]["digest"])
        config = blob(manifest["config"]["digest"])  # type: ignore[index]
    wanted = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    assert [x["digest"] for x in manifest["layers"]] == wanted  # type: ignore[attr-defined]
    assert config["config"] == {  # the layout image's, and the Dockerfile's ENV
        "Env": ["PATH=/bin", "ARCH=amd64", "MORE=1"],
        "WorkingDir": "/w",
        "Cmd": ["run"],
        "OnBuild": None,
    }


class _Registries:
    async def resolve_image_config(
        self, ref: str, platform: Platform, mode: str = "default"
    ) -> ImageConfig:
        return ImageConfig("sha256:registry", ref.encode())


def test_a_frontend_reads_a_layout_images_config_for_its_platform(tmp_path: Path) -> None:
    digest, _ = _index(tmp_path / "store")
    images = WithLayouts(_Registries(), EmbeddedClient(layouts={"store": tmp_path / "store"}))

    async def ask(ref: str, platform: Platform) -> ImageConfig:
        return await images.resolve_image_config(ref, platform)

    arm = anyio.run(ask, f"oci-layout://store@{digest}", Platform("linux", "arm64"))
    assert arm.digest == digest
    assert json.loads(arm.config)["config"]["Env"] == ["PATH=/bin", "ARCH=arm64"]
    other = anyio.run(ask, "alpine:3", Platform())
    assert other == ImageConfig("sha256:registry", b"alpine:3")
