"""The cache-backend conformance kit against ``local``, then what a user of the directory
relies on: BuildKit's layout, tags, concurrent exports and no half-written state.

The store reaches the directory only through the client: ``MemoryClientIO(tree_root=tmp_path)``
puts the client path ``cache`` at ``tmp_path / "cache"``, where these tests look at the files.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins import ByteSink, ClientDirectory
from llbkit.plugins.cache_local.backend import LocalCacheBackend, LocalCacheStore
from llbkit.sdk.testing import CacheBackendKit, MemoryClientIO, make_context

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


class TestLocalCacheBackend(CacheBackendKit):
    backend_class = LocalCacheBackend

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        # The kit opens the same attributes for export and import: give both keys. The path
        # is the client's, so it lands beneath the kit client's tree_root.
        return {"dest": str(tmp_path / "cache"), "src": str(tmp_path / "cache")}


def document(n: int, media_type: str = INDEX) -> bytes:
    """An index document as core writes one: a JSON manifest carrying its mediaType."""
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "n": n}).encode()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def open_store(
    tmp_path: Path,
    direction: str = "export",
    *,
    client: MemoryClientIO | None = None,
    **attrs: str,
) -> LocalCacheStore:
    backend = LocalCacheBackend(make_context("local"))
    key = "dest" if direction == "export" else "src"
    attrs.setdefault(key, "cache")
    client = client or MemoryClientIO(tree_root=tmp_path)
    return await backend.resolve(attrs, direction, client)  # type: ignore[arg-type]


async def export(
    tmp_path: Path, data: bytes, *, client: MemoryClientIO | None = None, **attrs: str
) -> None:
    store = await open_store(tmp_path, "export", client=client, **attrs)
    try:
        await store.write_index(data)
    finally:
        await store.aclose()


async def import_index(tmp_path: Path, **attrs: str) -> bytes | None:
    store = await open_store(tmp_path, "import", client=None, **attrs)
    try:
        return await store.read_index()
    finally:
        await store.aclose()


def index_json(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((tmp_path / "cache" / "index.json").read_bytes())
    return loaded


def tags(tmp_path: Path) -> dict[str, str]:
    manifests = index_json(tmp_path)["manifests"]
    return {m["annotations"][REF_NAME]: m["digest"] for m in manifests if "annotations" in m}


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# options


def test_each_direction_needs_its_own_key(tmp_path: Path) -> None:
    backend = LocalCacheBackend(make_context("local"))
    client = MemoryClientIO(tree_root=tmp_path)
    with pytest.raises(ConfigError, match=r"^cache backend local: dest= is required to export$"):
        anyio.run(backend.resolve, {"src": str(tmp_path)}, "export", client)
    with pytest.raises(ConfigError, match=r"^cache backend local: src= is required to import$"):
        anyio.run(backend.resolve, {"dest": str(tmp_path)}, "import", client)


def test_an_unknown_or_misplaced_key_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError, match=r"unknown option 'dset'; valid options: dest"):
        anyio.run(partial(open_store, tmp_path, "export", dset="x"))
    # digest= picks what to import; on an export it would silently do nothing.
    with pytest.raises(UnknownOptionError, match=r"'digest'"):
        anyio.run(partial(open_store, tmp_path, "export", digest=sha(b"x")))


def test_digest_option_must_be_a_sha256_digest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"digest='sha256:\.\./\.\./etc' is not sha256"):
        anyio.run(partial(open_store, tmp_path, "import", digest="sha256:../../etc"))


def test_the_store_names_its_directory_and_has_no_registry(tmp_path: Path) -> None:
    store = anyio.run(open_store, tmp_path)
    assert store.name == "local cache", "named by the client's path, not where it lands here"
    assert store.blob_source() is None


# the layout on disk


def test_an_export_writes_an_oci_layout_buildkit_reads(tmp_path: Path) -> None:
    data = document(1, MANIFEST)
    anyio.run(export, tmp_path, data)
    root = tmp_path / "cache"
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert index_json(tmp_path) == {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": sha(data),
                "size": len(data),
                "annotations": {REF_NAME: "latest"},
            }
        ],
    }
    assert (root / "blobs/sha256" / sha(data).removeprefix("sha256:")).read_bytes() == data
    assert files(root) == sorted(
        [
            "oci-layout",
            "index.json",
            "index.json.lock",
            f"blobs/sha256/{sha(data)[7:]}",
        ]
    )


def test_an_oci_layout_already_there_is_kept(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache/oci-layout").write_bytes(b'{"imageLayoutVersion": "1.0.0"}')
    anyio.run(export, tmp_path, document(1))
    assert (tmp_path / "cache/oci-layout").read_bytes() == b'{"imageLayoutVersion": "1.0.0"}'


def test_the_directory_is_the_clients_not_this_process(tmp_path: Path) -> None:
    """With a daemon, dest= is a path on the user's machine: only the client may open it."""
    absolute = str(tmp_path / "elsewhere")
    anyio.run(partial(export, tmp_path, document(1), dest=absolute))
    assert anyio.run(partial(import_index, tmp_path, src=absolute)) == document(1)
    assert not (tmp_path / "elsewhere").exists()
    landed = tmp_path / absolute.lstrip("/")
    assert files(landed) == sorted(
        [
            "oci-layout",
            "index.json",
            "index.json.lock",
            f"blobs/sha256/{sha(document(1))[7:]}",
        ]
    )


def test_a_tag_is_replaced_and_other_entries_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    image = {"mediaType": MANIFEST, "digest": sha(b"image"), "size": 5}
    (root / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [image], "annotations": {"a": "b"}})
    )
    anyio.run(export, tmp_path, document(1))
    anyio.run(partial(export, tmp_path, document(2), tag="v2"))
    anyio.run(export, tmp_path, document(3))
    index = index_json(tmp_path)
    assert index["annotations"] == {"a": "b"}
    assert index["manifests"][0] == image
    assert tags(tmp_path) == {"v2": sha(document(2)), "latest": sha(document(3))}
    assert len(index["manifests"]) == 3


def test_concurrent_exports_of_different_tags_all_land(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(partial(export, tmp_path, document(n), tag=f"t{n}"))

    anyio.run(scenario)
    assert tags(tmp_path) == {f"t{n}": sha(document(n)) for n in range(12)}


def test_exports_from_two_processes_at_once_both_land(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import anyio
        from llbkit.plugins.cache_local.backend import LocalCacheBackend
        from llbkit.sdk.testing import MemoryClientIO, make_context

        async def main(dest, who):
            backend = LocalCacheBackend(make_context("local"))
            client = MemoryClientIO(tree_root=Path(dest))
            for n in range(15):
                attrs = {"dest": "cache", "tag": f"{who}{n}"}
                store = await backend.resolve(attrs, "export", client)
                doc = {"mediaType": "application/vnd.oci.image.index.v1+json", "n": f"{who}{n}"}
                await store.write_index(json.dumps(doc).encode())

        anyio.run(main, sys.argv[1], sys.argv[2])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), who]) for who in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert set(tags(tmp_path)) == {f"{who}{n}" for who in "ab" for n in range(15)}


# blobs


def test_a_blob_that_does_not_match_its_digest_or_size_is_not_stored(tmp_path: Path) -> None:
    expected = b"expected"

    async def scenario() -> None:
        store = await open_store(tmp_path)
        with pytest.raises(ValueError, match="arrived as sha256:"):
            await store.write_blob(sha(expected), 8, chunks(b"tampered"))
        with pytest.raises(ValueError, match=r"\(9 bytes\) arrived as .* \(8 bytes\)"):
            await store.write_blob(sha(expected), 9, chunks(expected))
        with pytest.raises(ValueError, match="larger than its 4 bytes"):
            await store.write_blob(sha(expected), 4, chunks(b"expe", b"cted"))
        assert not await store.has_blob(sha(expected))

    anyio.run(scenario)
    assert not (tmp_path / "cache/blobs/sha256").exists() or not any(
        (tmp_path / "cache/blobs/sha256").iterdir()
    )


def test_a_layer_from_the_store_is_copied_and_only_its_size_checked(tmp_path: Path) -> None:
    from llbkit.core.plugins.blobcheck import BlobFile

    layer = tmp_path / "layer"
    layer.write_bytes(b"stored layer")

    async def scenario() -> bytes:
        store = await open_store(tmp_path)
        with pytest.raises(ValueError, match=r"\(13 bytes\) arrived as .* \(12 bytes\)"):
            await store.write_blob(sha(b"stored layer"), 13, BlobFile(layer))
        await store.write_blob(sha(b"stored layer"), 12, BlobFile(layer))
        return b"".join([c async for c in store.read_blob(sha(b"stored layer"))])

    assert anyio.run(scenario) == b"stored layer"
    assert layer.read_bytes() == b"stored layer"


def test_a_blob_whose_stream_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"half"
        raise ConnectionError("peer went away")

    async def scenario() -> None:
        store = await open_store(tmp_path)
        await store.write_blob(sha(b"half"), 4, broken())

    with pytest.raises(ConnectionError):
        anyio.run(scenario)
    assert files(tmp_path / "cache") == ["oci-layout"]


def test_blobs_are_read_back_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB

    async def scenario() -> list[bytes]:
        store = await open_store(tmp_path)
        await store.write_blob(sha(data), len(data), chunks(data[:1000], data[1000:]))
        reader = await open_store(tmp_path, "import")
        assert await reader.has_blob(sha(data))
        return [chunk async for chunk in reader.read_blob(sha(data))]

    read = anyio.run(scenario)
    assert b"".join(read) == data
    assert [len(c) for c in read] == [1 << 20, 1 << 20, len(data) - (2 << 20)]


def test_a_digest_never_becomes_a_path_outside_the_cache(tmp_path: Path) -> None:
    escape = "sha256:../../../etc/passwd"

    async def scenario() -> None:
        store = await open_store(tmp_path)
        with pytest.raises(ValueError, match="not a sha256 digest"):
            await store.has_blob(escape)
        with pytest.raises(ValueError, match="not a sha256 digest"):
            await store.write_blob(escape, 1, chunks(b"x"))
        with pytest.raises(ValueError, match="not a sha256 digest"):
            async for _ in store.read_blob(escape):
                pass

    anyio.run(scenario)
    # An index.json written by someone else is not trusted either.
    root = tmp_path / "cache"
    root.mkdir()
    entry = {"digest": escape, "annotations": {REF_NAME: "latest"}}
    (root / "index.json").write_text(json.dumps({"manifests": [entry]}))
    with pytest.raises(UserError, match=re.escape(f"names {escape!r}, not a sha256 digest")):
        anyio.run(import_index, tmp_path)


# the index document


def test_import_by_tag_and_by_digest(tmp_path: Path) -> None:
    anyio.run(partial(export, tmp_path, document(1), tag="v1"))
    anyio.run(partial(export, tmp_path, document(2, MANIFEST), tag="v2"))
    assert anyio.run(import_index, tmp_path) is None  # no "latest"
    assert anyio.run(partial(import_index, tmp_path, tag="v1")) == document(1)
    assert anyio.run(partial(import_index, tmp_path, tag="v2")) == document(2, MANIFEST)
    pinned = sha(document(2, MANIFEST))
    by_digest = anyio.run(partial(import_index, tmp_path, tag="v1", digest=pinned))
    assert by_digest == document(2, MANIFEST)


def test_an_import_of_a_missing_digest_names_src_and_digest(tmp_path: Path) -> None:
    anyio.run(export, tmp_path, document(1))
    missing = sha(b"never exported")
    with pytest.raises(UserError) as err:
        anyio.run(partial(import_index, tmp_path, digest=missing))
    assert "src=cache" in str(err.value)
    assert missing in str(err.value)
    assert "\n" not in str(err.value)


def test_an_empty_or_missing_directory_is_an_empty_cache(tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes | None, bool]:
        store = await open_store(tmp_path, "import")
        return await store.read_index(), await store.has_blob(sha(b"x"))

    assert anyio.run(scenario) == (None, False)
    assert not (tmp_path / "cache").exists(), "an import creates nothing"


def test_an_import_cannot_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(tmp_path, "import")
        with pytest.raises(PermissionError, match="import only"):
            await store.write_index(document(1))
        with pytest.raises(PermissionError, match="import only"):
            await store.write_blob(sha(b"x"), 1, chunks(b"x"))

    anyio.run(scenario)
    assert not (tmp_path / "cache").exists()


def test_an_index_document_without_media_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mediaType"):
        anyio.run(export, tmp_path, b'{"layers": []}')
    assert not (tmp_path / "cache" / "index.json").exists()


@dataclass
class FailingDirectory:
    """A client directory whose disk fills up as ``name`` is written."""

    real: ClientDirectory
    name: str

    async def exists(self, name: str) -> bool:
        return await self.real.exists(name)

    def read(self, name: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.real.read(name)

    @asynccontextmanager
    async def write(self, name: str) -> AsyncIterator[ByteSink]:
        async with self.real.write(name) as out:
            yield out
            if self._fails(name):
                raise OSError(28, "No space left on device")

    async def update(self, name: str, change: Callable[[bytes | None], bytes]) -> None:
        def failing(current: bytes | None) -> bytes:
            if self._fails(name):
                raise OSError(28, "No space left on device")
            return change(current)

        await self.real.update(name, failing)

    def _fails(self, name: str) -> bool:
        return name.startswith("blobs/") if self.name == "blob" else name == self.name


@dataclass
class FullDiskClient(MemoryClientIO):
    fails: str = ""

    def directory(self, path: str) -> FailingDirectory:  # type: ignore[override]
        return FailingDirectory(super().directory(path), self.fails)


@pytest.mark.parametrize("fails", ["blob", "index.json"])
def test_a_failed_export_leaves_index_json_as_it_was(tmp_path: Path, fails: str) -> None:
    """A crash or a full disk half way never leaves index.json naming a missing blob."""
    anyio.run(export, tmp_path, document(1))
    before = (tmp_path / "cache" / "index.json").read_bytes()
    client = FullDiskClient(tree_root=tmp_path, fails=fails)
    with pytest.raises(OSError, match="No space left"):
        anyio.run(partial(export, tmp_path, document(2), client=client))
    assert (tmp_path / "cache" / "index.json").read_bytes() == before
    assert not [f for f in files(tmp_path / "cache") if f.endswith(".tmp")]
    for digest in tags(tmp_path).values():
        assert (tmp_path / "cache/blobs/sha256" / digest.removeprefix("sha256:")).is_file()
