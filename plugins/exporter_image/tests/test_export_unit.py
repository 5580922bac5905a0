"""The image exporters on in-memory results: names, timestamps, layouts, option parsing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import pathlib
import tarfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import ConfigError
from llbkit.core.plugins import (
    BlobSource,
    BuildResult,
    ExportInfo,
    LayerDescriptor,
    LayerOptions,
)
from llbkit.plugins.exporter_image.exporter import ImageExporter, OCIExporter
from llbkit.sdk.testing import MemoryClientIO, RecordingProgress, layered_result, make_context


def _info(client: MemoryClientIO) -> ExportInfo:
    return ExportInfo("ref", client, RecordingProgress())


def _tree(root: Path) -> Path:
    tree = root / "tree"
    tree.mkdir(parents=True)
    (tree / "hello.txt").write_text("hello\n")
    return tree


def _files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _blob(files: dict[str, bytes], digest: str) -> dict:
    return json.loads(files["blobs/sha256/" + digest.split(":")[1]])


class _LayeredResult:
    """A result whose layers are blobs in a content store, as the solver's results are."""

    def __init__(self, store: Path, layers: list[bytes]) -> None:
        self.store = store
        self.blobs = []
        self.lookups: list[str] = []
        store.mkdir(parents=True, exist_ok=True)
        for raw in layers:
            data = gzip.compress(raw, mtime=0)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            (store / digest.split(":")[1]).write_bytes(data)
            diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
            media = "application/vnd.oci.image.layer.v1.tar+gzip"
            self.blobs.append(LayerDescriptor(digest, diff_id, len(data), "gzip", media))

    @property
    def key(self) -> str:
        return "sha256:" + "0" * 64

    @asynccontextmanager
    async def mount(self) -> AsyncIterator[Path]:
        raise AssertionError("a layered result is exported from its blobs")
        yield self.store  # pragma: no cover

    async def layers(self, options: LayerOptions) -> list[LayerDescriptor]:
        return list(self.blobs)

    async def blob_path(self, digest: str) -> Path:
        return self.store / digest.split(":")[1]

    def blob_sources(self, digest: str) -> list[BlobSource]:
        self.lookups.append(digest)
        return [BlobSource("registry.example", "library/base")]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``time.time()`` a minute later at every call, so two calls never agree."""
    ticks = iter(range(1_700_000_000, 1_800_000_000, 60))
    monkeypatch.setattr("time.time", lambda: float(next(ticks)))
    yield


def test_name_canonical_names_only_what_an_image_store_keeps(tmp_path: Path) -> None:
    """As BuildKit's: ``name@digest`` names are the image store's; with no store (the runc
    worker's), the answer names the image as given."""
    names = "localhost:5000/app:v1,example/app:v2,app"

    async def scenario() -> dict[str, str]:
        job = await ImageExporter(make_context("image")).resolve(
            {"name": names, "name-canonical": "true"}
        )
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            result = BuildResult({"linux/amd64": ref})
            client = MemoryClientIO(tree_root=tmp_path / "client")
            return dict(await job.export(result, _info(client)))

    found = anyio.run(scenario)
    assert found["image.name"].split(",") == ["localhost:5000/app:v1", "example/app:v2", "app"]


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize("platforms", [["linux/amd64"], ["linux/amd64", "linux/arm64"]])
def test_created_is_one_moment_for_configs_and_index(tmp_path: Path, platforms: list[str]) -> None:
    client = MemoryClientIO(tree_root=tmp_path / "client")
    tree = _tree(tmp_path)

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "out.tar"})
        with layered_result(tmp_path, tree) as ref:
            await job.export(BuildResult(dict.fromkeys(platforms, ref)), _info(client))

    anyio.run(scenario)
    files = _files(client.outputs["out.tar"])
    index = json.loads(files["index.json"])
    (top,) = index["manifests"]
    created = top["annotations"]["org.opencontainers.image.created"]
    manifests = (
        [_blob(files, d["digest"]) for d in _blob(files, top["digest"])["manifests"]]
        if len(platforms) > 1
        else [_blob(files, top["digest"])]
    )
    assert len(manifests) == len(platforms)
    for manifest in manifests:
        config = _blob(files, manifest["config"]["digest"])
        assert config["created"] == created
        assert {h["created"] for h in config["history"]} == {created}


def test_source_date_epoch_from_the_build_leaves_the_options_alone(tmp_path: Path) -> None:
    client = MemoryClientIO(tree_root=tmp_path / "client")
    metadata = {"llbkit.source-date-epoch": b"1700000000"}

    async def scenario() -> int | None:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "out.tar"})
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            await job.export(BuildResult({"linux/amd64": ref}, metadata), _info(client))
        return job.opts.epoch

    assert anyio.run(scenario) is None
    files = _files(client.outputs["out.tar"])
    (top,) = json.loads(files["index.json"])["manifests"]
    assert top["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    config = _blob(files, _blob(files, top["digest"])["config"]["digest"])
    assert config["created"] == "2023-11-14T22:13:20Z"


def test_layout_directory_copies_blobs_without_reading_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _LayeredResult(tmp_path / "store", [b"layer one" * 1000, b"layer two" * 1000])
    real = pathlib.Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.parent == result.store:
            raise AssertionError(f"layer blob {self} read into memory")
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    client = MemoryClientIO(tree_root=tmp_path / "client")

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "layout", "tar": "false"})
        await job.export(BuildResult({"linux/amd64": result}), _info(client))

    anyio.run(scenario)
    layout = tmp_path / "client" / "layout"
    index = json.loads(real(layout / "index.json"))
    manifest = json.loads(real(layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]))
    assert [layer["digest"] for layer in manifest["layers"]] == [b.digest for b in result.blobs]
    for blob in result.blobs:
        copied = layout / "blobs/sha256" / blob.digest[7:]
        assert real(copied) == real(result.store / blob.digest[7:])


def test_blob_sources_are_looked_up_once_per_layer(tmp_path: Path) -> None:
    result = _LayeredResult(tmp_path / "store", [b"one", b"two"])

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "out.tar"})
        await job.export(BuildResult({"linux/amd64": result}), _info(MemoryClientIO(tmp_path)))

    anyio.run(scenario)
    assert sorted(result.lookups) == sorted(b.digest for b in result.blobs)


@pytest.mark.parametrize("value", ["maybe", "yes", "2", "tRUE"])
def test_tar_must_be_a_boolean(value: str) -> None:
    said = f'non-bool value specified for tar: strconv.ParseBool: parsing "{value}"'
    with pytest.raises(ConfigError, match=said):
        anyio.run(OCIExporter(make_context("oci")).resolve, {"dest": "x", "tar": value})


@pytest.mark.parametrize(
    ("value", "expected"), [("", True), ("TRUE", True), ("t", True), ("0", False), ("F", False)]
)
def test_tar_accepts_booleans(value: str, expected: bool) -> None:
    job = anyio.run(OCIExporter(make_context("oci")).resolve, {"dest": "x", "tar": value})
    assert job.tar is expected


def test_docker_repo_tags_and_oci_name_annotation(tmp_path: Path) -> None:
    from llbkit.plugins.exporter_image.exporter import DockerExporter

    client = MemoryClientIO(tree_root=tmp_path / "client")
    names = "localhost:5000/app:v1,example/app,docker.io/library/busybox:1"

    async def scenario() -> None:
        job = await DockerExporter(make_context("docker")).resolve(
            {"dest": "out.tar", "name": names}
        )
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            await job.export(BuildResult({"linux/amd64": ref}), _info(client))

    anyio.run(scenario)
    files = _files(client.outputs["out.tar"])
    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == ["localhost:5000/app:v1", "example/app:latest", "busybox:1"]
    # As containerd's archive writer (BuildKit's): the image once per name.
    listed = json.loads(files["index.json"])["manifests"]
    assert [(m["annotations"]["io.containerd.image.name"], m["digest"]) for m in listed] == [
        ("localhost:5000/app:v1", listed[0]["digest"]),
        ("docker.io/example/app:latest", listed[0]["digest"]),
        ("docker.io/library/busybox:1", listed[0]["digest"]),
    ]
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in listed] == [
        "v1",
        "latest",
        "1",
    ]


def test_pushes_go_through_the_engines_registry_access(tmp_path: Path) -> None:
    from llbkit.core.registry.access import EngineRegistries

    registries = EngineRegistries({"registry.example:5000": {"http": True}})
    ctx = make_context("image")
    ctx = type(ctx)(ctx.name, ctx.distribution, ctx.config, ctx.state_dir, registries)
    job = anyio.run(
        ImageExporter(ctx).resolve,
        {"name": "other.example/app", "push": "true", "registry.insecure": "true"},
    )
    assert job.registries is registries and job.insecure


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_each_layer_is_in_the_compression_its_media_type_names(
    tmp_path: Path, compression: str
) -> None:
    import zstandard

    client = MemoryClientIO(tree_root=tmp_path / "client")

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve(
            {"dest": "out.tar", "compression": compression}
        )
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            await job.export(BuildResult({"linux/amd64": ref}), _info(client))

    anyio.run(scenario)
    files = _files(client.outputs["out.tar"])
    manifest = _blob(files, json.loads(files["index.json"])["manifests"][0]["digest"])
    diff_ids = _blob(files, manifest["config"]["digest"])["rootfs"]["diff_ids"]
    assert len(manifest["layers"]) == len(diff_ids) == 2
    for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        blob = files["blobs/sha256/" + layer["digest"][7:]]
        raw = {
            "gzip": gzip.decompress,
            "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
            "uncompressed": lambda b: b,
        }[compression](blob)
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
        assert layer["mediaType"].endswith(
            {"gzip": "+gzip", "zstd": "+zstd", "uncompressed": ".tar"}[compression]
        )


def test_options_without_effect_are_said_to_have_none(tmp_path: Path) -> None:
    client = MemoryClientIO(tree_root=tmp_path / "client")
    info = _info(client)

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve(
            {"dest": "out.tar", "buildinfo": "false", "unpack": "true"}
        )
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            await job.export(BuildResult({"linux/amd64": ref}), info)

    anyio.run(scenario)
    assert info.progress.warnings == [  # type: ignore[attr-defined]
        "exporter option buildinfo has no effect in this release of llbkit",
        "exporter option unpack has no effect in this release of llbkit",
    ]


def test_an_oci_exports_descriptor_carries_its_creation_time(tmp_path: Path) -> None:
    """As BuildKit's oci exporter answers (buildctl names a ``tar=false`` output in its
    index.json with this descriptor, annotations and all)."""
    client = MemoryClientIO(tree_root=tmp_path / "client")
    answers: list[Mapping[str, str]] = []

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "out.tar"})
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            answers.append(await job.export(BuildResult({"linux/amd64": ref}), _info(client)))

    anyio.run(scenario)
    files = _files(client.outputs["out.tar"])
    written = json.loads(files["index.json"])["manifests"][0]
    described = json.loads(base64.b64decode(answers[0]["containerimage.descriptor"]))
    created = "org.opencontainers.image.created"
    assert described["digest"] == written["digest"]
    assert described["annotations"] == {created: written["annotations"][created]}


def test_annotations_for_a_platform_reach_that_platforms_manifest_only(tmp_path: Path) -> None:
    """``annotation[linux/arm64].k``: the arm64 image of a multi-platform export (its platform
    read as containerd reads it, so ``aarch64`` is arm64); a single-platform export takes
    none of them, as BuildKit's."""
    client = MemoryClientIO(tree_root=tmp_path / "client")
    attrs = {"dest": "multi.tar", "annotation.a": "b", "annotation[linux/aarch64].k": "v"}

    async def scenario() -> None:
        job = await OCIExporter(make_context("oci")).resolve(attrs)
        single = await OCIExporter(make_context("oci")).resolve({**attrs, "dest": "one.tar"})
        with layered_result(tmp_path / "a", _tree(tmp_path)) as ref:
            await job.export(BuildResult({"linux/amd64": ref, "linux/arm64": ref}), _info(client))
            await single.export(BuildResult({"linux/amd64": ref}), _info(client))

    anyio.run(scenario)
    files = _files(client.outputs["multi.tar"])
    (top,) = json.loads(files["index.json"])["manifests"]
    index = json.loads(files["blobs/sha256/" + top["digest"].split(":")[1]])
    found = {}
    for entry in index["manifests"]:
        manifest = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
        found[entry["platform"]["architecture"]] = manifest.get("annotations")
    assert found == {"amd64": {"a": "b"}, "arm64": {"a": "b", "k": "v"}}
    files = _files(client.outputs["one.tar"])
    (top,) = json.loads(files["index.json"])["manifests"]
    manifest = json.loads(files["blobs/sha256/" + top["digest"].split(":")[1]])
    assert manifest["annotations"] == {"a": "b"}


@pytest.mark.parametrize(
    ("platforms", "listed", "index"),
    [
        (["linux/amd64"], False, False),
        (["linux/amd64"], True, True),  # multi-platform for one: a result by platform
        (["linux/amd64", "linux/arm64"], True, True),
    ],
)
def test_an_index_is_answered_without_a_config_digest(
    tmp_path: Path, platforms: list[str], listed: bool, index: bool
) -> None:
    """As BuildKit's: ``containerimage.config.digest`` names the one image's config, and an
    index (several platforms, or one as a map) has none to name."""
    metadata = {}
    if listed:
        entries = [
            {"ID": p, "Platform": dict(zip(("os", "architecture"), p.split("/"), strict=True))}
            for p in platforms
        ]
        metadata["refs.platforms"] = json.dumps({"Platforms": entries}).encode()

    client = MemoryClientIO(tmp_path / "client")

    async def scenario() -> dict[str, str]:
        job = await OCIExporter(make_context("oci")).resolve({"dest": "out.tar"})
        with layered_result(tmp_path, _tree(tmp_path)) as ref:
            result = BuildResult(dict.fromkeys(platforms, ref), metadata)
            return dict(await job.export(result, _info(client)))

    answer = anyio.run(scenario)
    descriptor = json.loads(base64.b64decode(answer["containerimage.descriptor"]))
    assert descriptor["mediaType"].endswith("index.v1+json") == index
    assert ("containerimage.config.digest" in answer) == (not index)
    # The archive: docker's manifest.json for one image only; an index's platforms in Go's
    # field order (the index's bytes, so its digest, are BuildKit's).
    files = _files(client.outputs["out.tar"])
    assert ("manifest.json" in files) == (not index)
    if index:
        (top,) = json.loads(files["index.json"])["manifests"]
        listed = json.loads(files["blobs/sha256/" + top["digest"].split(":")[1]])
        assert [list(m["platform"]) for m in listed["manifests"]] == [
            ["architecture", "os"] for _ in platforms
        ]
