"""Layers as image blobs: each store layer written once as a deterministic tar, compressed, and
kept in the content store under its digest, so every later export or push reuses it.

The tar of a layer is what BuildKit's differ writes for the same change (``layertar``), so
its diff id is BuildKit's. Layers compress in parallel (zlib and zstd release the GIL), so an
image with many layers uses every core; a layer that already has a blob keeps it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from llbkit.core.cache.layertar import tar_layer
from llbkit.core.cache.store import Chain, Store
from llbkit.core.errors import ConfigError

__all__ = ["LayerBlob", "compress_bytes", "layer_blobs"]

MEDIA_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "uncompressed"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "uncompressed"): "application/vnd.docker.image.rootfs.diff.tar",
}


@dataclass(frozen=True)
class LayerBlob:
    """One layer of an image: its compressed blob and its uncompressed digest (diff id)."""

    digest: str
    diff_id: str
    size: int
    compression: str

    def media_type(self, flavour: str) -> str:
        return MEDIA_TYPES[flavour, self.compression]


class _Hashing:
    """A file wrapper that hashes what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:
        return self.size


class _Compressor:
    """A file-like sink: what the tar writer gives is compressed into ``out`` as it comes.

    Both are made of pieces of ``_CHUNK`` bytes compressed on every core (as pigz and
    ``zstd -T`` do): gzip members, or zstd frames, which concatenated are one valid stream of
    either. Where a piece ends depends only on the data, so the bytes do not depend on timing
    or on the number of cores. The tar writer's thread only cuts pieces: hashing them (the
    diff id), and hashing and writing what they compress to, is one more thread's work, in
    order.
    """

    def __init__(self, out: _Hashing, compression: str, level: int | None) -> None:
        self.out = out
        self.compression = compression
        self.size = 0
        self.hash = hashlib.sha256()
        self._buffer = bytearray()
        self._pool: ThreadPoolExecutor | None = None
        self._serial: ThreadPoolExecutor | None = None
        self._pending: list[Any] = []
        self._work: Any = None
        self._workers = 1
        if compression == "gzip":
            self._work = partial(_gzip_member, level=level)
        elif compression == "zstd":
            self._work = partial(_zstd_frame, level=3 if level is None else level)
        elif compression != "uncompressed":
            raise ConfigError(f"compression={compression!r}: gzip, zstd or uncompressed")
        if self._work is not None:
            # Members and frames are independent: every core compresses one at a time.
            self._workers = max(1, os.cpu_count() or 1)
            self._pool = ThreadPoolExecutor(self._workers)
            self._serial = ThreadPoolExecutor(1)

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self._pool is None:
            self.hash.update(data)
            self.out.write(data)
            return len(data)
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            start = 0
            with memoryview(self._buffer) as view:
                while len(self._buffer) - start >= _CHUNK:
                    self._submit(bytes(view[start : start + _CHUNK]))
                    start += _CHUNK
            del self._buffer[:start]
        return len(data)

    def _submit(self, chunk: bytes) -> None:
        assert self._pool is not None and self._serial is not None
        compressed = self._pool.submit(self._work, chunk)
        self._pending.append(self._serial.submit(self._settle, chunk, compressed))
        # A bounded number of pieces in flight: memory stays a few pieces per core.
        if len(self._pending) >= 2 * self._workers + 2:
            self._pending.pop(0).result()

    def _settle(self, chunk: bytes, compressed: Any) -> None:
        """One piece, in order: its bytes into the diff id, what it became into ``out``."""
        self.hash.update(chunk)
        self.out.write(compressed.result())

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if self._pool is None or self._serial is None:
            return
        try:
            if self._buffer or not self._pending:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            for future in self._pending:
                future.result()
        finally:
            self._serial.shutdown(cancel_futures=True)
            self._pool.shutdown(cancel_futures=True)


#: bytes per gzip member or zstd frame
_CHUNK = 4 << 20
_PROBE = 64 << 10


def _zstd_frame(chunk: bytes, *, level: int) -> bytes:
    """One zstd frame, with its content size (a reader can size its buffer from it)."""
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(chunk)


def _gzip_member(chunk: bytes, *, level: int | None) -> bytes:
    """One gzip member. At the default level, a chunk that deflate would shrink by less than a
    tenth (already compressed or random data, where only the tar headers compress) is stored,
    which costs nothing; decided from the data alone, so the output stays deterministic. A
    level the user asked for is always used as given."""
    import zlib

    if level is None:
        level = 6
        probe = chunk[:_PROBE]
        if probe and len(zlib.compress(probe, 1)) >= len(probe) * 0.9:
            level = 0
    return gzip.compress(chunk, compresslevel=level, mtime=0)


def compress_bytes(raw: bytes, compression: str, level: int | None = None) -> bytes:
    """``raw`` compressed exactly as a layer of that compression is (for small trees that are
    not store layers)."""
    import io

    out = io.BytesIO()
    compressor = _Compressor(_Hashing(out), compression, level)
    compressor.write(raw)
    compressor.close()
    return out.getvalue()


def _compress(
    store: Store,
    layer: int,
    *,
    lowers: list[Path] | None,
    compression: str,
    level: int | None,
    epoch: int | None,
    source: str | None = None,
) -> tuple[Path, LayerBlob]:
    """Tar and compress one layer into a file under ``tmp/`` (runs in a worker thread); or,
    given a ``source`` blob of it (its digest), recompress that one, so the layer
    keeps its diff id (``force-compression`` converts a pulled layer; it does not rebuild it)."""
    out_fd, out_path = tempfile.mkstemp(dir=store.tmp, prefix="blob-")
    try:
        with os.fdopen(out_fd, "wb") as out:
            sink = _Hashing(out)
            compressor = _Compressor(sink, compression, level)
            if source is not None:
                _decompress_into(store.root.content.blob_path(source), compressor)
            else:
                tar_layer(store.layer_path(layer), compressor, store.format, epoch, lowers)
            compressor.close()
        diff_id = "sha256:" + compressor.hash.hexdigest()
        digest = "sha256:" + sink.hash.hexdigest()
        return Path(out_path), LayerBlob(digest, diff_id, sink.size, compression)
    except BaseException:
        os.unlink(out_path)
        raise


def _decompress_into(blob: Path, out: _Compressor) -> None:
    from llbkit.core.snapshot.untar import decompressed

    with open(blob, "rb") as raw:
        stream = decompressed(raw)
        try:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
        finally:
            stream.close()


def register_blob(
    store: Store,
    layer: int,
    path: Path,
    blob: LayerBlob,
    *,
    media_type: str = "",
    source: tuple[str, str] | None = None,
) -> None:
    """Record that ``layer`` is already available as ``blob`` (a pulled image layer), so an
    export or push reuses the original compressed bytes and digest."""
    variant = f"{blob.compression}:None:None"
    with store.lock:  # adopted and named at once: a prune never takes it between the two
        store.root.content.link_in(path, blob.digest, media_type)
        store.db.save_layer_blob(
            layer, variant, blob.digest, blob.diff_id, blob.size, source=source
        )


def blob_sources(store: Store, digest: str) -> list[tuple[str, str]]:
    """Registries and repositories a blob was pulled from (for cross-repository mounts)."""
    return store.db.blob_sources(digest)


def layer_blobs(
    store: Store,
    chain: Chain,
    *,
    compression: str = "gzip",
    level: int | None = None,
    epoch: int | None = None,
    force: bool = False,
) -> list[LayerBlob]:
    """The image layers of ``chain``, bottom first; made once per layer and compression.

    As BuildKit's, the compression asked applies to layers that have no blob yet: one that
    has (pulled, imported, or exported before) keeps it. ``force`` makes every layer in the
    compression asked, a layer that has a blob by recompressing it (same diff id), without
    replacing what later exports reuse."""
    variant = f"{compression}:{level}:{epoch}"
    found: dict[int, LayerBlob] = {}
    missing: list[int] = []
    sources: dict[int, str] = {}  # layers recompressed from a blob they have: its digest
    lazy = store.lazy(chain)  # imported, not fetched: the blob is the layer's only form yet
    layers = list(dict.fromkeys(chain))
    variants = store.db.blob_variants(layers) if epoch is None else {}
    for layer in layers:
        own: list[LayerBlob] = []  # the blobs it has, its own first
        for other in variants.get(layer, ()):
            kept = store.db.layer_blob(layer, f"{other}:None:None")
            if kept is not None and (layer in lazy or store.root.content.has(kept[0])):
                own.append(LayerBlob(kept[0], kept[1], kept[2], other))
        if not force:
            if own:
                found[layer] = own[0]
            elif (row := store.db.layer_blob(layer, variant)) is not None and (
                layer in lazy or store.root.content.has(row[0])
            ):
                found[layer] = LayerBlob(row[0], row[1], row[2], compression)
        else:
            same = [blob for blob in own if blob.compression == compression]
            here = [blob for blob in own if store.root.content.has(blob.digest)]
            if same:
                found[layer] = same[0]  # already in the compression asked: nothing to convert
            elif here:
                sources[layer] = here[0].digest
        if layer not in found:
            missing.append(layer)

    parents = store.db.parents_and_whiteouts(layers)

    def below(layer: int) -> list[Path] | None:
        """The layers to compare ``layer`` with: those below it here, if it was made on them
        (a layer made elsewhere, merged or linked onto this base, or whose base is gone, is
        written whole: its blob serves every chain it is in)."""
        lowers = chain[: chain.index(layer)]
        for n, known in enumerate((*lowers, layer)):
            if parents.get(known, (None, False))[0] != (lowers[n - 1] if n else None):
                return None
        if any(n in lazy for n in lowers):
            return None  # files not here to compare with
        return [store.layer_path(n) for n in reversed(lowers)]

    def make(layer: int) -> tuple[Path, LayerBlob]:
        source = sources.get(layer)
        lowers = below(layer) if source is None else None
        return _compress(
            store,
            layer,
            lowers=lowers,
            compression=compression,
            level=level,
            epoch=epoch,
            source=source,
        )

    workers = max(1, min(len(missing), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        made = list(pool.map(make, missing))
    for layer, (path, blob) in zip(missing, made, strict=True):
        found[layer] = blob
        with store.lock:
            if store.root.content.has(blob.digest):
                path.unlink()
            else:
                store.root.content.adopt(path, blob.digest)
            if force and layer not in sources and variants.get(layer):
                continue  # rebuilt from its files: its own blob stays the one later exports use
            store.db.save_layer_blob(layer, variant, blob.digest, blob.diff_id, blob.size)
    return [found[layer] for layer in layers]
