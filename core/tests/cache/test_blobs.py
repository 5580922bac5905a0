"""Layer blobs: their tables come with the state root, layer tars keep hard links, and a
layer that has a blob keeps it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from llbkit.core.cache.blobs import LayerBlob, blob_sources, layer_blobs, register_blob
from llbkit.core.cache.layertar import tar_layer
from llbkit.core.cache.store import Store


def _tables(store: Store) -> set[str]:
    rows = store.db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {row[0] for row in rows}


def test_blob_tables_come_with_the_root_and_no_call_creates_them(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        assert {"blob_sources", "layer_blobs"} <= _tables(store)
        (tmp_path / "layer").mkdir()
        (tmp_path / "layer/f").write_text("data\n")
        layer = store.commit_layer(tmp_path / "layer", description="one")
        statements: list[str] = []
        store.db.conn.set_trace_callback(statements.append)
        try:
            blob = layer_blobs(store, (layer,), compression="uncompressed")[0]
            copy = tmp_path / "copy"
            copy.write_bytes(store.root.content.read(blob.digest))
            register_blob(store, layer, copy, blob, source=("example.com", "repo"))
            assert blob_sources(store, blob.digest) == [("example.com", "repo")]
        finally:
            store.db.conn.set_trace_callback(None)
        assert not [s for s in statements if "CREATE TABLE" in s.upper()]


def test_an_older_root_gets_the_blob_tables_when_opened(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        store.db.conn.execute("DROP TABLE blob_sources")
        store.db.conn.execute("DROP TABLE layer_blobs")
    with Store.open(tmp_path / "root") as store:
        assert {"blob_sources", "layer_blobs"} <= _tables(store)
        assert blob_sources(store, "sha256:" + "0" * 64) == []


def test_layer_tars_keep_hard_links(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "a").mkdir(parents=True)
    (layer / "a/f").write_text("data\n")
    os.link(layer / "a/f", layer / "g")
    out = io.BytesIO()
    tar_layer(layer, out, "oci", 0, [])
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # Depth first: a/f is archived first, g links to it.
    assert members["a/f"].isreg() and members["a/f"].size == 5
    assert members["g"].islnk() and members["g"].linkname == "a/f" and members["g"].size == 0
    assert LayerBlob("d", "i", 1, "gzip").media_type("oci").endswith("tar+gzip")


def test_a_layer_with_a_blob_keeps_it_and_force_recompresses_it(tmp_path: Path) -> None:
    """As BuildKit's: the compression asked applies to layers without a blob; with
    force-compression a layer's blob is recompressed, so its diff id stays."""
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        (tmp_path / "layer").mkdir()
        (tmp_path / "layer/f").write_text("data\n" * 1000)
        layer = store.commit_layer(tmp_path / "layer", description="one")
        gzip = layer_blobs(store, (layer,), compression="gzip")[0]
        kept = layer_blobs(store, (layer,), compression="zstd")[0]
        assert kept == gzip
        forced = layer_blobs(store, (layer,), compression="zstd", force=True)[0]
        assert forced.compression == "zstd" and forced.digest != gzip.digest
        assert forced.diff_id == gzip.diff_id
        raw = layer_blobs(store, (layer,), compression="uncompressed", force=True)[0]
        assert raw.diff_id == gzip.diff_id == raw.digest
        # Converted blobs do not replace the layer's own one: unforced, gzip it stays.
        assert layer_blobs(store, (layer,), compression="uncompressed")[0] == gzip
        assert layer_blobs(store, (layer,), compression="zstd")[0] == gzip


def test_a_layer_is_compared_only_with_the_base_it_was_made_on(tmp_path: Path) -> None:
    """A layer on its own base leaves out what is unchanged from it; the same files merged
    onto another base (its blob serves every chain it is in) are written whole."""
    with Store.open(tmp_path / "root", layer_format="oci") as store:

        def layer(name: str, parent: int | None) -> int:
            tree = tmp_path / name
            (tree / "etc").mkdir(parents=True)
            (tree / "etc/passwd").write_text("root\n")
            os.utime(tree / "etc/passwd", ns=(10**18, 10**18))
            (tree / name).write_text(name)
            return store.commit_layer(tree, parent=parent, description=name)

        def names(chain: tuple[int, ...]) -> list[str]:
            blob = layer_blobs(store, chain, compression="uncompressed")[-1]
            with tarfile.open(fileobj=io.BytesIO(store.root.content.read(blob.digest))) as tar:
                return tar.getnames()

        base = layer("base", None)
        assert names((base, layer("child", base))) == ["child"]
        assert names((base, layer("linked", None))) == ["etc", "etc/passwd", "linked"]


def test_a_layers_blobs_count_in_its_size_and_go_with_it(tmp_path: Path) -> None:
    """As BuildKit sizes a record (its files and each compression of it kept) and frees its
    blobs with it; a blob no layer has goes once nothing is held (a running export may be
    reading one)."""
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        (tmp_path / "layer").mkdir()
        (tmp_path / "layer/f").write_bytes(os.urandom(50_000))
        layer = store.commit_layer(tmp_path / "layer", description="one")
        alone = {info.id: info.size for info in store.layers()}[layer]
        gzip = layer_blobs(store, (layer,), compression="gzip")[0]
        zstd = layer_blobs(store, (layer,), compression="zstd", force=True)[0]
        sized = {info.id: info.size for info in store.layers()}[layer]
        assert sized == alone + gzip.size + zstd.size
        assert store.accounted_bytes() == sized
        unnamed = store.root.content.put(b"no layer's")
        with store.hold([layer]):
            assert store.drop_unnamed_blobs() == []
        assert store.drop_unnamed_blobs() == [unnamed]
        assert store.delete_layer(layer)
        assert not store.root.content.has(gzip.digest)
        assert [p for p in (tmp_path / "root/content").rglob("*") if p.is_file()] == []
        assert store.db.blob_digests() == []
