"""``type=registry`` against a real registry: what core relies on beyond the kit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.cache_backend import Direction
from llbkit.core.plugins.context import BlobSource
from llbkit.plugins.cache_registry.backend import (
    SMALL_BLOB,
    RegistryCacheBackend,
    RegistryCacheStore,
)
from llbkit.sdk.testing import MemoryClientIO, make_context
from llbkit.sdk.testing.registry import LocalRegistry, registry_env

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _backend(tmp_path: Path, *, access: bool = True) -> RegistryCacheBackend:
    ctx = make_context("registry", state_dir=tmp_path / "state", registries={} if access else None)
    return RegistryCacheBackend(ctx)


async def _open(tmp_path: Path, ref: str, direction: Direction = "export") -> RegistryCacheStore:
    client = MemoryClientIO(tree_root=tmp_path / "client")
    return await _backend(tmp_path).resolve({"ref": ref}, direction, client)


def _index(media_type: str, config: bytes) -> bytes:
    """An index document as core writes it, naming the cache config blob."""
    desc = {"mediaType": CACHE_CONFIG, "digest": _digest(config), "size": len(config)}
    if media_type == OCI_MANIFEST:
        doc = {"schemaVersion": 2, "mediaType": media_type, "config": desc, "layers": []}
    else:
        doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [desc]}
    return json.dumps(doc).encode()


async def _export(tmp_path: Path, ref: str, media_type: str, config: bytes) -> bytes:
    """Write ``config`` as a blob, then an index of ``media_type`` naming it; return the index."""
    index = _index(media_type, config)
    store = await _open(tmp_path, ref)
    try:
        await store.write_blob(_digest(config), len(config), _chunks(config))
        await store.write_index(index)
    finally:
        await store.aclose()
    return index


# -- options -------------------------------------------------------------------------------


def test_an_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    attrs = {"ref": "127.0.0.1:5000/cache/app", "dest": "/tmp/x"}
    with pytest.raises(UnknownOptionError, match=r"cache backend registry: unknown option 'dest'"):
        anyio.run(_backend(tmp_path).resolve, attrs, "export", MemoryClientIO(tmp_path))


@pytest.mark.parametrize("direction", ["import", "export"])
def test_ref_is_required_in_both_directions(tmp_path: Path, direction: Direction) -> None:
    with pytest.raises(ConfigError, match="cache backend registry: ref= is required"):
        anyio.run(_backend(tmp_path).resolve, {}, direction, MemoryClientIO(tmp_path))


def test_a_malformed_ref_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cache backend registry: .*must be lowercase") as err:
        anyio.run(
            _backend(tmp_path).resolve, {"ref": "Cache/App"}, "export", MemoryClientIO(tmp_path)
        )
    assert "\n" not in str(err.value)


def test_a_digest_ref_is_for_import_only(tmp_path: Path) -> None:
    ref = f"127.0.0.1:5000/cache/app@sha256:{'1' * 64}"
    with pytest.raises(ConfigError, match="names a digest; an export needs a tag"):
        anyio.run(_backend(tmp_path).resolve, {"ref": ref}, "export", MemoryClientIO(tmp_path))


def test_an_engine_without_registry_access_is_refused(tmp_path: Path) -> None:
    backend = _backend(tmp_path, access=False)
    with pytest.raises(ConfigError, match="no registry access"):
        anyio.run(backend.resolve, {"ref": "127.0.0.1:5000/c"}, "import", MemoryClientIO(tmp_path))


# -- against the registry ----------------------------------------------------------------


@pytest.mark.services
def test_names_and_blob_source_are_the_normalized_ref(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    async def scenario() -> tuple[str, BlobSource | None]:
        store = await _open(tmp_path, f"{registry.host}/cache/source")
        try:
            return store.name, store.blob_source()
        finally:
            await store.aclose()

    name, source = anyio.run(scenario)
    assert name == f"registry {registry.host}/cache/source:latest"
    # What the image source records for a pulled layer, so a push to this registry mounts.
    assert source == BlobSource(registry.host, "cache/source")


@pytest.mark.services
@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST])
def test_the_index_keeps_its_media_type(
    tmp_path: Path, registry: LocalRegistry, media_type: str
) -> None:
    ref = f"{registry.host}/cache/media:{media_type.split('.')[-2].replace('+', '-')}"
    config = f"cache config for {media_type}\n".encode()

    async def scenario() -> tuple[bytes, bytes | None]:
        index = await _export(tmp_path, ref, media_type, config)
        store = await _open(tmp_path, ref, "import")
        try:
            return index, await store.read_index()
        finally:
            await store.aclose()

    index, read = anyio.run(scenario)
    assert read == index
    # What any other client (docker buildx, BuildKit) is served for the tag.
    repo, _, tag = ref.partition("/")[2].rpartition(":")
    raw = httpx.get(
        f"http://{registry.host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST])},
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == media_type
    assert raw.content == index and json.loads(raw.content)["mediaType"] == media_type


@pytest.mark.services
def test_an_empty_repository_has_no_index(tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario() -> bytes | None:
        store = await _open(tmp_path, f"{registry.host}/cache/nothing:yet", "import")
        try:
            return await store.read_index()
        finally:
            await store.aclose()

    assert anyio.run(scenario) is None


@pytest.mark.services
def test_an_import_by_digest_reads_that_index(tmp_path: Path, registry: LocalRegistry) -> None:
    name = f"{registry.host}/cache/pinned"

    async def scenario() -> tuple[bytes, bytes | None, bytes | None]:
        index = await _export(tmp_path, f"{name}:v1", OCI_INDEX, b"pinned config\n")
        found = []
        for digest in (_digest(index), "sha256:" + "2" * 64):
            store = await _open(tmp_path, f"{name}@{digest}", "import")
            try:
                found.append(await store.read_index())
            finally:
                await store.aclose()
        return index, found[0], found[1]

    index, pinned, unknown = anyio.run(scenario)
    assert pinned == index
    assert unknown is None


async def _read_back(tmp_path: Path, ref: str, digest: str) -> tuple[bool, bytes]:
    """Whether an import of ``ref`` has the blob, and its bytes."""
    store = await _open(tmp_path, ref, "import")
    try:
        has = await store.has_blob(digest)
        return has, b"".join([chunk async for chunk in store.read_blob(digest)])
    finally:
        await store.aclose()


@pytest.mark.services
def test_a_blob_above_the_memory_limit_round_trips(tmp_path: Path, registry: LocalRegistry) -> None:
    data = bytes(range(256)) * ((SMALL_BLOB + (1 << 20)) // 256) + b"tail"
    digest = _digest(data)
    ref = f"{registry.host}/cache/large:latest"

    async def scenario() -> tuple[bool, bytes]:
        store = await _open(tmp_path, ref)
        try:
            await store.write_blob(digest, len(data), _chunks(data, 1 << 20))
        finally:
            await store.aclose()
        return await _read_back(tmp_path, ref, digest)

    has, read = anyio.run(scenario)
    assert len(data) > SMALL_BLOB
    assert has and read == data
    # The spool file went once the registry had the blob.
    assert list((tmp_path / "state" / "spool").iterdir()) == []


@pytest.mark.services
def test_a_layer_in_a_file_is_pushed_from_it_not_spooled(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    from llbkit.core.plugins.blobcheck import BlobFile

    data = hashlib.sha256(b"layer").digest() * ((SMALL_BLOB * 2) // 32)
    layer = tmp_path / "layer"
    layer.write_bytes(data)
    digest = _digest(data)
    ref = f"{registry.host}/cache/file:latest"
    spool = tmp_path / "state" / "spool"
    made: list[Path] = []

    async def scenario() -> tuple[bool, bytes]:
        store = await _open(tmp_path, ref)
        original = store._spool_path
        store._spool_path = lambda: made.append(original()) or made[-1]  # type: ignore[method-assign]
        try:
            with pytest.raises(ValueError, match="bytes"):  # a size the file does not have
                await store.write_blob(digest, len(data) + 1, BlobFile(layer))
            await store.write_blob(digest, len(data), BlobFile(layer))
            # bytes that are not the digest: the registry refuses them, nothing is kept
            wrong = _digest(b"other")
            with pytest.raises(UserError):
                await store.write_blob(wrong, len(data), BlobFile(layer))
            assert not await store.has_blob(wrong)
        finally:
            await store.aclose()
        return await _read_back(tmp_path, ref, digest)

    has, read = anyio.run(scenario)
    assert has and read == data
    assert made == []  # never spooled
    assert layer.read_bytes() == data  # the store's file is left as it was
    assert not spool.exists() or list(spool.iterdir()) == []


@pytest.mark.services
@pytest.mark.parametrize("size", [100, SMALL_BLOB + 1], ids=["small", "large"])
def test_a_blob_that_does_not_match_its_digest_is_not_pushed(
    tmp_path: Path, registry: LocalRegistry, size: int
) -> None:
    claimed = _digest(b"expected")
    ref = f"{registry.host}/cache/tampered:latest"

    async def scenario() -> bool:
        store = await _open(tmp_path, ref)
        try:
            with pytest.raises(ValueError, match=f"blob {claimed} .* arrived as sha256:"):
                await store.write_blob(claimed, size, _chunks(b"x" * size))
            return await store.has_blob(claimed)
        finally:
            await store.aclose()

    assert anyio.run(scenario) is False
    spool = tmp_path / "state" / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


@pytest.mark.services
def test_a_missing_blob_is_key_error_naming_it(tmp_path: Path, registry: LocalRegistry) -> None:
    ref = f"{registry.host}/cache/missing:latest"
    missing = "sha256:" + "3" * 64

    async def scenario() -> None:
        await _export(tmp_path, ref, OCI_INDEX, b"some config\n")
        store = await _open(tmp_path, ref, "import")
        try:
            async for _ in store.read_blob(missing):
                pass
        finally:
            await store.aclose()

    with pytest.raises(KeyError) as err:
        anyio.run(scenario)
    assert err.value.args == (missing,)


@pytest.mark.services
def test_a_manifest_digest_reads_as_the_manifest(tmp_path: Path, registry: LocalRegistry) -> None:
    """Core reads a platform manifest that an image index lists as if it were a blob."""
    ref = f"{registry.host}/cache/platform:latest"

    async def scenario() -> tuple[bytes, bytes]:
        manifest = await _export(tmp_path, ref, OCI_MANIFEST, b"platform config\n")
        store = await _open(tmp_path, ref, "import")
        try:
            read = b"".join([c async for c in store.read_blob(_digest(manifest))])
        finally:
            await store.aclose()
        return manifest, read

    manifest, read = anyio.run(scenario)
    assert read == manifest


@pytest.mark.services
def test_an_import_cannot_write(tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario() -> None:
        store = await _open(tmp_path, f"{registry.host}/cache/readonly:latest", "import")
        try:
            with pytest.raises(PermissionError, match="opened for import only"):
                await store.write_index(_index(OCI_INDEX, b"x"))
            with pytest.raises(PermissionError, match="opened for import only"):
                await store.write_blob(_digest(b"x"), 1, _chunks(b"x"))
        finally:
            await store.aclose()

    anyio.run(scenario)


@pytest.mark.services
def test_an_index_without_media_type_is_refused(tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario() -> None:
        store = await _open(tmp_path, f"{registry.host}/cache/untyped:latest")
        try:
            await store.write_index(b'{"layers": []}')
        finally:
            await store.aclose()

    with pytest.raises(ValueError, match="has no mediaType"):
        anyio.run(scenario)


@pytest.mark.services
def test_credentials_come_from_the_docker_config(
    tmp_path: Path, private_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{private_registry.host}/team/cache:latest"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
    with pytest.raises(UserError, match="needs credentials"):
        anyio.run(_export, tmp_path, ref, OCI_INDEX, b"private config\n")
    env = registry_env(tmp_path / "login", private_registry.host, "tester", "right")
    monkeypatch.setenv("DOCKER_CONFIG", env["DOCKER_CONFIG"])
    index = anyio.run(_export, tmp_path, ref, OCI_INDEX, b"private config\n")

    async def read() -> bytes | None:
        store = await _open(tmp_path, ref, "import")
        try:
            return await store.read_index()
        finally:
            await store.aclose()

    assert anyio.run(read) == index
