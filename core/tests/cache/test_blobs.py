"""Layer blobs: their tables come with the state root, and layer tars keep hard links."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from llbkit.core.cache.blobs import LayerBlob, _tar_layer, blob_sources, layer_blobs, register_blob
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
    _tar_layer(layer, out, "oci", 0)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # A directory's files come after its siblings: g is archived first, a/f links to it.
    assert members["g"].isreg() and members["g"].size == 5
    assert members["a/f"].islnk() and members["a/f"].linkname == "g" and members["a/f"].size == 0
    assert LayerBlob("d", "i", 1, "gzip").media_type("oci").endswith("tar+gzip")


def _reference_tar(layer: Path) -> bytes:
    """The layer tar as tarfile's own ``gettarinfo`` describes each entry (names cleared)."""
    out = io.BytesIO()
    with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        stack = [""]
        while stack:
            rel = stack.pop()
            dirs = []
            for name in sorted(os.listdir(layer / rel if rel else layer)):
                arc = f"{rel}/{name}" if rel else name
                info = tar.gettarinfo(str(layer / arc), arc)
                if info is None:
                    continue
                info.uname = info.gname = ""
                if info.isreg():
                    with open(layer / arc, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
                if info.isdir():
                    dirs.append(arc)
            stack.extend(reversed(dirs))
    return out.getvalue()


def test_layer_entries_are_what_tarfile_would_write_for_every_kind_of_file(
    tmp_path: Path,
) -> None:
    import socket

    layer = tmp_path / "layer"
    (layer / "a/b").mkdir(parents=True)
    (layer / "a/f").write_text("x\n")
    os.link(layer / "a/f", layer / "a/b/hard")
    os.symlink("../f", layer / "a/b/sym")
    os.mkfifo(layer / "a/fifo")
    os.utime(layer / "a/b", ns=(1, 1_577_836_800_123_456_789))  # a fractional mtime: PAX
    if os.geteuid() == 0:
        os.mknod(layer / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(layer / "a/f", 1234, 5678)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(layer / "sock"))
    out = io.BytesIO()
    _tar_layer(layer, out, "oci", None)
    assert out.getvalue() == _reference_tar(layer)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as written:
        names = written.getnames()
    assert "sock" not in names and "a/b/hard" in names
