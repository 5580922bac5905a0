"""The oci and docker exporters on a Dockerfile build: layouts, digests, reproducibility."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import anyio
import jsonschema
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.control import Controller
from llbkit.core.errors import UnknownOptionError
from llbkit.plugins.exporter_image.exporter import OCIExporter
from llbkit.sdk.testing import make_context
from llbkit.sdk.testing.builds import build_in, run_build
from llbkit.sdk.testing.oci_schemas import CONFIG, INDEX, MANIFEST

APP = Path(__file__).resolve().parents[3] / "examples" / "app"


def build(root: Path, base: str, output: tuple[str, dict[str, str]], **args: str) -> dict[str, str]:
    opts = {"build-arg:BASE": base, **{f"build-arg:{k}": v for k, v in args.items()}}
    outcome = build_in(
        root,
        EmbeddedClient(locals={"context": APP, "dockerfile": APP}),
        frontend="dockerfile.v0",
        frontend_opts=opts,
        exports=[output],
    )
    return dict(outcome.metadata)


def read_layout(data: bytes) -> tuple[dict, dict, dict, dict[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    blob = lambda d: files["blobs/sha256/" + d.split(":")[1]]  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    return index, manifest, config, files


@pytest.mark.root
@pytest.mark.services
def test_oci_tarball_is_a_valid_layout(busybox_image: str, tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    meta = build(
        tmp_path / "root",
        busybox_image,
        ("oci", {"dest": str(out), "name": "example/app:v1"}),
    )
    index, manifest, config, files = read_layout(out.read_bytes())
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    jsonschema.validate(index, INDEX)
    jsonschema.validate(manifest, MANIFEST)
    jsonschema.validate(config, CONFIG)
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/example/app:v1"
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert meta["containerimage.digest"] == desc["digest"]
    assert meta["image.name"] == "docker.io/example/app:v1"  # normalized, as BuildKit's
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    for name, content in files.items():
        if name.startswith("blobs/"):
            assert "sha256:" + hashlib.sha256(content).hexdigest() == "sha256:" + name[13:]
    diff_ids = [
        "sha256:"
        + hashlib.sha256(gzip.decompress(files["blobs/sha256/" + layer["digest"][7:]])).hexdigest()
        for layer in manifest["layers"]
    ]
    assert config["rootfs"]["diff_ids"] == diff_ids
    assert config["config"]["Cmd"] == ["cat", "/app/message.txt"]
    # The base image's layer is exported as the very blob that was pulled.
    from llbkit.sdk.testing.registry import busybox_layer

    base = busybox_layer()
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(base).hexdigest()
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == len(diff_ids)
    top = files["blobs/sha256/" + manifest["layers"][-1]["digest"][7:]]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as layer:
        message = layer.extractfile("app/message.txt")
        assert message is not None
        assert message.read() == b"built from: hello from llbkit\n"
    if shutil.which("skopeo"):
        inspected = subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True, text=True
        )
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == desc["digest"]


@pytest.mark.root
@pytest.mark.services
def test_docker_tarball_has_manifest_json(busybox_image: str, tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    build(
        tmp_path / "root",
        busybox_image,
        ("docker", {"dest": str(out), "name": "example/app:v1"}),
    )
    _, manifest, _, files = read_layout(out.read_bytes())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == ["example/app:v1"]
    assert entry["Config"] == "blobs/sha256/" + manifest["config"]["digest"][7:]
    assert all(layer in files for layer in entry["Layers"])


@pytest.mark.root
@pytest.mark.services
def test_source_date_epoch_gives_one_digest(busybox_image: str, tmp_path: Path) -> None:
    digests = set()
    for n in range(2):
        meta = build(
            tmp_path / f"root{n}",
            busybox_image,
            ("oci", {"dest": str(tmp_path / f"{n}.tar"), "rewrite-timestamp": "true"}),
            SOURCE_DATE_EPOCH="1700000000",
        )
        digests.add(meta["containerimage.digest"])
    assert len(digests) == 1


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownOptionError, match="colour") as err:
        anyio.run(OCIExporter(make_context("oci")).resolve, {"dest": "x", "colour": "red"})
    _, _, listed = str(err.value).partition("valid options: ")
    valid = listed.split(", ")
    assert "dest" in valid
    assert "compression" in valid
    assert "annotation.<key>" in valid


@pytest.mark.root
@pytest.mark.services
def test_push_then_pull_back(busybox_image: str, tmp_path: Path) -> None:
    from llbkit.sdk import llb

    host = busybox_image.split("/", maxsplit=1)[0]
    meta = build(
        tmp_path / "root",
        busybox_image,
        ("image", {"name": f"{host}/example/app:v1", "push": "true"}),
        SOURCE_DATE_EPOCH="1700000000",
    )
    assert meta["image.name"] == f"{host}/example/app:v1"
    # The same image under another tag: the same digest, its blobs already in the registry.
    again = build(
        tmp_path / "root",
        busybox_image,
        ("image", {"name": f"{host}/example/app:v2", "push": "true"}),
        SOURCE_DATE_EPOCH="1700000000",
    )
    assert again["containerimage.digest"] == meta["containerimage.digest"]
    state = llb.image(f"{host}/example/app:v1")
    data = state.marshal(llb.Platform("linux", "amd64")).to_bytes()
    with Controller.open(tmp_path / "pull") as engine:

        async def pull() -> str:
            outcome = await run_build(engine, EmbeddedClient(), definition=data)
            assert outcome.result is not None
            async with outcome.result.mount() as root:
                return (root / "app" / "message.txt").read_text()

        assert anyio.run(pull) == "built from: hello from llbkit\n"
    if shutil.which("skopeo"):
        inspected = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/example/app:v1"],
            capture_output=True,
            text=True,
        )
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == meta["containerimage.digest"]


def test_push_without_a_name_pushes_nothing(tmp_path: Path) -> None:
    """As BuildKit: ``push=true`` with no ``name=`` is no error; there is nothing to push (this
    engine has no registry access at all: asking for it would fail), and the build says so."""
    from llbkit.core.plugins import BuildResult, ExportInfo
    from llbkit.plugins.exporter_image.exporter import ImageExporter
    from llbkit.sdk.testing import MemoryClientIO, RecordingProgress, layered_result

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    progress = RecordingProgress()
    info = ExportInfo("ref", MemoryClientIO(tree_root=tmp_path / "client"), progress)

    async def scenario() -> object:
        job = await ImageExporter(make_context("image")).resolve({"push": "true"})
        with layered_result(tmp_path / "layers", tree) as ref:
            found = await job.export(BuildResult({"linux/amd64": ref}), info)
            assert "image.name" not in found
            return await job.finalize(info)

    assert anyio.run(scenario) == {}
    assert progress.warnings == ["exporter image: push=true without name= pushes nothing"]


@pytest.mark.root
@pytest.mark.services
def test_force_compression_converts_pulled_layers_keeping_their_diff_ids(
    busybox_image: str, tmp_path: Path
) -> None:
    """As BuildKit's: a pulled layer keeps its blob whatever compression is asked, unless
    forced; forced, it is recompressed, not rebuilt, so its diff id stays the pulled one."""
    import zstandard

    from llbkit.sdk.testing.registry import busybox_layer

    pulled = "sha256:" + hashlib.sha256(busybox_layer()).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(busybox_layer())).hexdigest()

    def base_layer(attrs: dict[str, str]) -> tuple[str, str, bytes]:
        out = tmp_path / "image.tar"
        out.unlink(missing_ok=True)
        build(tmp_path / "root", busybox_image, ("oci", {"dest": str(out), **attrs}))
        _, manifest, config, files = read_layout(out.read_bytes())
        digest = manifest["layers"][0]["digest"]
        return digest, config["rootfs"]["diff_ids"][0], files["blobs/sha256/" + digest[7:]]

    assert base_layer({})[:2] == (pulled, diff_id)
    assert base_layer({"compression": "zstd"})[:2] == (pulled, diff_id)
    assert base_layer({"force-compression": "true"})[:2] == (pulled, diff_id)  # gzip already
    forced, forced_diff_id, blob = base_layer({"compression": "zstd", "force-compression": "true"})
    assert forced != pulled and forced_diff_id == diff_id
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    assert "sha256:" + hashlib.sha256(raw.read()).hexdigest() == diff_id
    assert base_layer({})[0] == pulled  # later exports still reuse the pulled blob
