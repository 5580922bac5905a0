"""Lazy layers: imported as a blob's description, fetched once when first needed."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import anyio
import pytest

from llbkit.core.cache.blobs import compress_bytes, layer_blobs
from llbkit.core.cache.lazy import MissingBlobError, fetch_blob, fetchable, materialize
from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import disk_usage

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer_blob(files: dict[str, bytes]) -> tuple[bytes, str, str]:
    """A gzipped layer tar: its bytes, digest and diff id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = compress_bytes(raw.getvalue(), "gzip")
    sha = "sha256:" + hashlib.sha256(blob).hexdigest()
    return blob, sha, "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def _import(store: Store, blob: bytes, digest: str, diff_id: str, parent: int | None = None) -> int:
    return store.import_layer(
        parent=parent,
        digest=digest,
        diff_id=diff_id,
        size=len(blob),
        media_type=GZIP,
        description="cache x layer 1/1",
        origin="cache x",
        created=1_700_000_000.0,
    )


class _Remote:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.fetched: list[str] = []

    async def fetch(self, digest: str, path: Path) -> None:
        self.fetched.append(digest)
        path.write_bytes(self.blobs[digest])


def test_an_imported_layer_is_a_row_until_its_files_are_needed(tmp_path: Path) -> None:
    blob, digest, diff_id = _layer_blob({"etc/app.conf": b"x=1\n"})
    remote = _Remote({digest: blob})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = _import(store, blob, digest, diff_id)
        assert _import(store, blob, digest, diff_id) == layer  # known: reused, not a second row
        assert store.lazy((layer,)) == {layer: (digest, GZIP)}
        assert not fetchable(store, (layer,))  # no import of this process can fetch it
        (record,) = disk_usage(store)
        assert record.description.endswith("(not fetched)") and record.size == 0
        # Its blob serves an export as it is, without fetching anything.
        (made,) = layer_blobs(store, (layer,))
        assert (made.digest, made.diff_id) == (digest, diff_id)
        store.fetchers.add([digest], remote.fetch)
        assert fetchable(store, (layer,))

        async def twice() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(materialize, store, (layer,), None)
                tg.start_soon(materialize, store, (layer,), None)

        anyio.run(twice)
        assert remote.fetched == [digest]  # once, however many asked
        assert store.lazy((layer,)) == {}
        assert (store.layer_path(layer) / "etc/app.conf").read_bytes() == b"x=1\n"
        with store.view((layer,)) as tree:
            assert (tree / "etc/app.conf").exists()


def test_du_shows_a_lazy_layer_as_buildkit_once_its_blob_is_fetched(tmp_path: Path) -> None:
    """Recorded by a build, it counts one use (BuildKit's record of an unread image: usage 1).
    Until its blob comes it is 0 B and says why; with its blob (an export fetched it) it is the
    blob's size and its own description, as BuildKit's record once its blob is in the store."""
    blob, digest, diff_id = _layer_blob({"a": b"a"})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        _import(store, blob, digest, diff_id)
        (record,) = disk_usage(store)
        assert (record.description, record.size) == ("cache x layer 1/1 (not fetched)", 0)
        assert record.usage_count == 1
        store.fetchers.add([digest], _Remote({digest: blob}).fetch)
        anyio.run(fetch_blob, store, digest, None)
        (record,) = disk_usage(store)
        assert (record.description, record.size) == ("cache x layer 1/1", len(blob))


def test_lazy_layers_survive_a_restart_and_go_with_their_results(tmp_path: Path) -> None:
    blob, digest, diff_id = _layer_blob({"a": b"a"})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = _import(store, blob, digest, diff_id)
        store.save_result("key", (layer,))
        store.link_key("key", "key", "v", "{}")
    with Store.open(tmp_path / "root") as store:  # recovery keeps rows of layers without files
        assert store.lookup("key") == ("key", (layer,))
        assert store.lazy((layer,))
        assert store.delete_layer(layer)
        assert store.lookup("key") is None
        assert store.lazy((layer,)) == {}


def test_a_blob_that_does_not_match_is_refused(tmp_path: Path) -> None:
    blob, digest, diff_id = _layer_blob({"a": b"a"})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        _import(store, blob, digest, diff_id)
        tampered = _Remote({digest: b"tampered"}).fetch
        store.fetchers.add([digest], tampered)
        with pytest.raises(
            MissingBlobError, match=f"remote cache sent sha256:.* for blob {digest}"
        ):
            anyio.run(fetch_blob, store, digest, None)
        assert not store.root.content.has(digest)
        store.fetchers.remove([digest], tampered)
        with pytest.raises(MissingBlobError, match="imported from cache x, which this build"):
            anyio.run(fetch_blob, store, digest, None)


def test_two_imports_of_one_blob_each_keep_their_own_way_to_it(tmp_path: Path) -> None:
    blob, digest, diff_id = _layer_blob({"a": b"a"})
    first, second = _Remote({digest: blob}), _Remote({digest: blob})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = _import(store, blob, digest, diff_id)
        store.fetchers.add([digest], first.fetch)
        store.fetchers.add([digest], second.fetch)
        store.fetchers.remove([digest], first.fetch)  # the first build ended
        assert fetchable(store, (layer,))
        anyio.run(materialize, store, (layer,), None)
        assert (first.fetched, second.fetched) == ([], [digest])


def test_a_layer_filled_when_the_process_died_is_fetched_again(tmp_path: Path) -> None:
    blob, digest, diff_id = _layer_blob({"a": b"a"})
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = _import(store, blob, digest, diff_id)
        # Killed between moving the files in and recording it: a directory, still lazy.
        (store.layer_path(layer) / "half").mkdir(parents=True)
    with Store.open(tmp_path / "root") as store:
        assert store.lazy((layer,)) and not store.layer_path(layer).exists()
        store.fetchers.add([digest], _Remote({digest: blob}).fetch)
        anyio.run(materialize, store, (layer,), None)
        assert sorted(p.name for p in store.layer_path(layer).iterdir()) == ["a"]


def test_a_zstd_layer_of_several_frames_is_unpacked_whole(tmp_path: Path) -> None:
    # Larger than one frame: llbkit, zstd -T and pzstd write such a layer as several frames.
    import os as _os

    files = {f"data/{n}.bin": _os.urandom(3 << 20) for n in range(3)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = compress_bytes(raw.getvalue(), "zstd")
    assert blob.count(b"\x28\xb5\x2f\xfd") >= 3  # a frame's magic number, once per frame
    assert blob == compress_bytes(raw.getvalue(), "zstd")  # the same bytes every time
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = store.import_layer(
            parent=None,
            digest=digest,
            diff_id=diff_id,
            size=len(blob),
            media_type="application/vnd.oci.image.layer.v1.tar+zstd",
            description="cache x layer 1/1",
            origin="cache x",
            created=1_700_000_000.0,
        )
        store.fetchers.add([digest], _Remote({digest: blob}).fetch)
        anyio.run(materialize, store, (layer,), None)
        tree = store.layer_path(layer)
        for name, data in files.items():
            assert (tree / name).read_bytes() == data
