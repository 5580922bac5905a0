"""``docker-image://`` sources against a real registry on loopback."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.core.solver.solver import BuildFailed
from llbkit.sdk import llb
from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, layer_tar, push_image

from .helpers import build, build_data, cached, files, open_engine

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_pull_applies_layers_with_whiteouts(tmp_path: Path, registry: LocalRegistry) -> None:
    base = layer_tar(
        {
            "etc": None,
            "etc/keep": "k\n",
            "etc/gone": "g\n",
            "opaque": None,
            "opaque/old": "o\n",
            "link": "->etc/keep",
        }
    )
    top = layer_tar(
        {"etc/.wh.gone": "", "opaque/.wh..wh..opq": "", "opaque/new": "n\n", "etc/added": "a\n"}
    )
    push_image(registry.host, "test/layers:v1", [base, top])
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, llb.image(f"{registry.host}/test/layers:v1"))
        got = files(engine, outcome)
        assert got == {
            "etc": "<dir>",
            "etc/keep": "k\n",
            "etc/added": "a\n",
            "opaque": "<dir>",
            "opaque/new": "n\n",
            "link": "k\n",
        }
        again = build(engine, llb.image(f"{registry.host}/test/layers:v1"))
        assert f"docker-image://{registry.host}/test/layers:v1" in cached(again)


def test_busybox_base_image(tmp_path: Path, registry: LocalRegistry) -> None:
    push_image(registry.host, "library/busybox:latest", [busybox_layer()])
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, llb.image(f"{registry.host}/library/busybox"))
        assert outcome.result is not None
        with engine.store.view(outcome.result.chain) as root:  # type: ignore[union-attr]
            assert os.access(root / "bin" / "busybox", os.X_OK)
            assert os.readlink(root / "bin" / "sh") == "busybox"


def test_missing_image_is_one_clear_error(tmp_path: Path, registry: LocalRegistry) -> None:
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, llb.image(f"{registry.host}/test/nothing:here"))
    assert "not found" in str(err.value)


def test_escaping_entries_stay_inside(tmp_path: Path, registry: LocalRegistry) -> None:
    outside = tmp_path / "outside-target"
    evil = layer_tar(
        {
            "escape": f"->{tmp_path}",
            "escape/planted": "x\n",
            "../../../planted-too": "y\n",
            "ok": "fine\n",
        }
    )
    push_image(registry.host, "test/evil:v1", [evil])
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, llb.image(f"{registry.host}/test/evil:v1"))
        got = files(engine, outcome)
    assert not (tmp_path / "planted").exists() and not outside.exists()
    assert got["ok"] == "fine\n"


def test_a_corrupt_blob_is_refused_and_not_kept(tmp_path: Path, registry: LocalRegistry) -> None:
    layer = layer_tar({"data": "original\n"})
    push_image(registry.host, "test/corrupt:v1", [layer])
    import hashlib

    digest = hashlib.sha256(layer).hexdigest()
    blob = registry.root / "data" / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob.write_bytes(layer_tar({"data": "tampered\n"}))
    with open_engine(tmp_path / "root") as engine:
        with pytest.raises(BuildFailed) as err:
            build(engine, llb.image(f"{registry.host}/test/corrupt:v1"))
        assert "does not match its digest" in str(err.value)
        blobs = list((engine.store.root.path / "plugins").rglob("blobs/sha256/*"))
        assert blobs == []


def test_a_corrupt_blob_that_is_not_a_layer_is_refused_for_its_digest(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    """Unpacked as it downloads, garbage fails the unpacking first: the refusal still names
    the digest, as when the blob was checked before it was read."""
    layer = layer_tar({"data": "original\n"})
    push_image(registry.host, "test/garbage:v1", [layer])
    import hashlib

    digest = hashlib.sha256(layer).hexdigest()
    blob = registry.root / "data" / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob.write_bytes(b"\x1f\x8b" + os.urandom(32 << 20))  # long enough to fail unpacking first
    with open_engine(tmp_path / "root") as engine:
        with pytest.raises(BuildFailed) as err:
            build(engine, llb.image(f"{registry.host}/test/garbage:v1"))
        assert "does not match its digest" in str(err.value)


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    import subprocess

    if shutil.which("htpasswd") is None or shutil.which("docker-registry") is None:
        pytest.skip("htpasswd or docker-registry is not installed")
    htpasswd = tmp_path / "htpasswd"
    made = subprocess.run(["htpasswd", "-Bbn", "tester", "right"], capture_output=True, check=True)
    htpasswd.write_bytes(made.stdout)
    with LocalRegistry(tmp_path / "private", htpasswd=htpasswd) as running:
        yield running


def test_credentials_from_docker_config(
    tmp_path: Path, private_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llbkit.sdk.testing.registry import registry_env

    push_image(
        private_registry.host,
        "team/app:v1",
        [layer_tar({"app": "private\n"})],
        auth=("tester", "right"),
    )
    image = llb.image(f"{private_registry.host}/team/app:v1")
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, image)
    assert "needs credentials (docker login" in str(err.value)
    env = registry_env(tmp_path / "wrong", private_registry.host, "tester", "wrong")
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    with open_engine(tmp_path / "root2") as engine, pytest.raises(BuildFailed) as err:
        build(engine, image)
    assert "access denied" in str(err.value)
    env = registry_env(tmp_path / "right", private_registry.host, "tester", "right")
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    with open_engine(tmp_path / "root3") as engine:
        assert files(engine, build(engine, image)) == {"app": "private\n"}


def test_oci_layout_from_the_client(tmp_path: Path) -> None:
    import gzip
    import hashlib
    import json

    import anyio

    from llbkit.core.client.embedded import EmbeddedClient
    from llbkit.core.sources.oci_layout import parse_oci_layout

    from .helpers import PLATFORM

    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    layer = layer_tar({"from-layout": "yes\n"})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [put(gzip.decompress(layer))]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": put(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    index_digest = put(index)
    (layout / "index.json").write_bytes(index)
    state = llb.oci_layout(f"mystore@{index_digest}")
    data = state.marshal(PLATFORM).to_bytes()
    with open_engine(tmp_path / "root") as engine:
        client = EmbeddedClient(layouts={"mystore": layout})
        outcome = build_data(engine, data, client)
        assert files(engine, outcome) == {"from-layout": "yes\n"}
        with pytest.raises(BuildFailed) as err:
            build_data(engine, data, EmbeddedClient(), no_cache=True)
        assert "use --oci-layout mystore=<path>" in str(err.value)
    # A layer limit is part of the key: the whole image is not a cached answer for it.
    whole = parse_oci_layout(f"oci-layout://mystore@{index_digest}", {}, None)
    first = parse_oci_layout(f"oci-layout://mystore@{index_digest}", {"oci.layerlimit": "1"}, None)
    assert anyio.run(whole.cache_key, client) != anyio.run(first.cache_key, client)


def test_mirror_first_then_resolve_mode_local(tmp_path: Path, registry: LocalRegistry) -> None:
    from llbkit.core.config import EngineConfig

    push_image(registry.host, "library/mirrored:v1", [layer_tar({"m": "from the mirror\n"})])
    unreachable = "127.0.0.1:9"  # the discard port: nothing answers there
    mirrored = EngineConfig(registry={unreachable: {"mirrors": [registry.host]}}, gc=False)
    with open_engine(tmp_path / "root", config=mirrored) as engine:
        outcome = build(engine, llb.image(f"{unreachable}/library/mirrored:v1"))
        assert files(engine, outcome) == {"m": "from the mirror\n"}
    with open_engine(tmp_path / "root") as engine:
        local = llb.image(f"{unreachable}/library/mirrored:v1", resolve_mode="local")
        assert files(engine, build(engine, local, no_cache=True)) == {"m": "from the mirror\n"}
        # Nothing known of this one: the registry is asked, as BuildKit asks it (here it is
        # unreachable).
        with pytest.raises(BuildFailed) as err:
            build(engine, llb.image(f"{unreachable}/library/other:v1", resolve_mode="local"))
        assert f"{unreachable}/library/other:v1" in str(err.value)
        assert "connect" in str(err.value).lower()


def test_record_type_is_kept_for_image_layers(tmp_path: Path, registry: LocalRegistry) -> None:
    push_image(
        registry.host,
        "test/recordtype:v1",
        [layer_tar({"a": "1\n"}), layer_tar({"b": "2\n"})],
    )
    with open_engine(tmp_path / "root") as engine:
        ref = f"{registry.host}/test/recordtype:v1"
        build(engine, llb.image(ref, record_type="internal"))
        # A pulled layer is described as BuildKit describes it: pulled from NAME@DIGEST.
        pulled = f"pulled from {registry.host}/test/recordtype@sha256:"
        kinds = {i.record_type for i in engine.store.layers() if i.description.startswith(pulled)}
    assert kinds == {"internal"}


def test_every_driver_gets_the_registry_settings(tmp_path: Path) -> None:
    from llbkit.core.config import EngineConfig

    hosts = {"registry.example:5000": {"http": True}}
    config = EngineConfig(registry=hosts, gc=False)
    with open_engine(tmp_path / "root", config=config) as engine:
        source = engine.drivers.source("docker-image")
        exporter = engine.drivers.exporter("image")
        for driver in (source, exporter):
            registries = driver.ctx.registries  # type: ignore[attr-defined]
            assert registries is engine.drivers.registries
        assert registries.hosts == hosts


def _left_in_tmp(root: Path) -> list[str]:
    """What the root's ``tmp/`` holds besides its empty directory and the overlay's spare
    work and mount directories (a pool the engine reuses between mounts)."""
    return sorted(
        p.name
        for p in (root / "tmp").iterdir()
        if p.name != "empty" and sorted(c.name for c in p.iterdir()) != ["m", "w"]
    )


def test_one_engine_leaves_no_stage_behind(tmp_path: Path, registry: LocalRegistry) -> None:
    """A daemon's ``tmp/`` does not grow with its builds: the stage a pull, a local source or
    a diff was made in goes when the step ends, as does one of a pull that failed."""
    push_image(registry.host, "test/staged:v1", [layer_tar({"a": "a\n"}), layer_tar({"b": "b\n"})])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    root = tmp_path / "root"
    with open_engine(root) as engine:
        image = llb.image(f"{registry.host}/test/staged:v1")
        for n in range(2):
            (ctx / "f").write_text(f"{n}\n")
            upper = image.file(llb.copy(llb.local("ctx"), "/f", "/f"))
            outcome = build(engine, llb.diff(image, upper), locals={"ctx": ctx})
            assert files(engine, outcome) == {"f": f"{n}\n"}
        with pytest.raises(BuildFailed):
            build(engine, llb.image(f"{registry.host}/test/missing:v1"))
        assert _left_in_tmp(root) == []
