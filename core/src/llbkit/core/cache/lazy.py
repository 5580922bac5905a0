"""Lazy layers: imported from a remote cache as a blob's description, fetched when first needed.

A cache hit on an imported record costs no download. The blob comes when a step needs the files
(:func:`materialize`, before the step runs) or an exporter needs the bytes (:func:`fetch_blob`);
a push to the registry the cache lives in mounts the blob instead. Where each blob can be
fetched from is known only to the process that imported it (:attr:`Store.fetchers`); a lazy layer
that no import of this process can fetch makes its results misses (:func:`fetchable`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import IO

import anyio

from llbkit.core.cache.store import ShownWork, Store
from llbkit.core.errors import UserError, first_error

__all__ = [
    "IMAGE_ORIGIN",
    "MissingBlobError",
    "fetch_blob",
    "fetchable",
    "materialize",
    "materialize_for_blobs",
]

#: the origin of a lazy layer an image left unpulled (not a remote cache's)
IMAGE_ORIGIN = "image"


class MissingBlobError(UserError):
    """A remote cache named a blob it does not have."""


def fetchable(store: Store, chain: Sequence[int]) -> bool:
    """Whether every layer of ``chain`` is here or can be fetched by this process."""
    for digest, _ in store.lazy(chain).values():
        if digest not in store.fetchers and not store.root.content.has(digest):
            return False
    return True


#: where the fetch of a blob under way is shown, when the one who asked shows it (a fetcher
#: that shows its work shows it there, rather than on its own)
showing: ContextVar[ShownWork | None] = ContextVar("showing", default=None)


async def fetch_blob(store: Store, digest: str, limiter: anyio.CapacityLimiter | None) -> Path:
    """The blob in the content store, downloaded from its remote cache first if need be."""
    content = store.root.content
    if content.has(digest):
        return content.blob_path(digest)
    async with store.fetch_lock(digest):
        if content.has(digest):
            return content.blob_path(digest)
        fetchers = store.fetchers.get(digest)
        if not fetchers and _origin(store, digest) == IMAGE_ORIGIN:
            raise MissingBlobError(
                f"layer blob {digest} of an image was not pulled, and no image of this build "
                "has it; build from that image again, or prune the record"
            )
        if not fetchers:
            raise MissingBlobError(
                f"layer blob {digest} was imported from {_origin(store, digest)}, which this "
                "build does not import; import it again (--import-cache) or prune the record"
            )
        failures = []
        for fetcher in fetchers:  # every open import that has the blob, until one delivers
            path = store.tmp / f"fetch-{digest.removeprefix('sha256:')}"
            try:
                got = await fetcher(digest, path)
                if got is None:
                    got = await anyio.to_thread.run_sync(_sha256, path, limiter=limiter)
                if got != digest:
                    raise MissingBlobError(f"remote cache sent {got} for blob {digest}; refused")
                await anyio.to_thread.run_sync(_adopt, store, path, digest, limiter=limiter)
                break
            except UserError as err:
                failures.append(str(err))
            finally:
                path.unlink(missing_ok=True)  # adopted (moved away), or refused
        else:
            raise MissingBlobError("; ".join(failures))
    return content.blob_path(digest)


async def materialize(
    store: Store, chain: Sequence[int], limiter: anyio.CapacityLimiter | None
) -> None:
    """Fetch and unpack every lazy layer of ``chain`` (concurrently), so its files are there."""
    lazy = store.lazy(chain)
    if not lazy:
        return

    async def one(layer: int, digest: str, media_type: str) -> None:
        async with store.fetch_lock(f"layer-{layer}"):
            if not store.lazy((layer,)):
                return
            shown = store.fetchers.shown(digest)
            token = showing.set(shown)
            try:
                blob = await fetch_blob(store, digest, limiter)
                if shown is not None:
                    shown.status(f"extracting {digest}")
                await anyio.to_thread.run_sync(
                    _unpack, store, layer, blob, media_type, limiter=limiter
                )
                if shown is not None:
                    shown.status(f"extracting {digest}", done=True)
            finally:
                showing.reset(token)
                if shown is not None:
                    shown.close()

    try:
        async with anyio.create_task_group() as tg:
            for layer, (digest, media_type) in lazy.items():
                tg.start_soon(one, layer, digest, media_type)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def _adopt(store: Store, path: Path, digest: str) -> None:
    with store.lock:
        if not store.root.content.has(digest):
            store.root.content.adopt(path, digest)


def _origin(store: Store, digest: str) -> str:
    """The cache a lazy blob was imported from, as its layers remember it."""
    return store.db.lazy_origin(digest) or "a remote cache"


async def materialize_for_blobs(
    store: Store,
    chain: Sequence[int],
    variant: str,
    *,
    force: bool,
    limiter: anyio.CapacityLimiter | None,
) -> None:
    """Before blobs of ``chain`` are made in ``variant`` (``compression:level:epoch``): fetch
    the files of the lazy layers that have no blob to serve as it is (all of them with
    ``force``). A layer keeps the blob it has whatever compression is asked, as BuildKit's;
    a variant with a time rewritten (``epoch``) is made anew."""
    lazy = store.lazy(chain)
    rewritten = not variant.endswith(":None")
    kept = {} if rewritten else store.db.blob_variants(list(lazy))
    need = [
        layer
        for layer in lazy
        if force or (not kept.get(layer) and store.db.layer_blob(layer, variant) is None)
    ]
    await materialize(store, need, limiter)


def _unpack(store: Store, layer: int, blob: Path, media_type: str) -> None:
    from llbkit.core.snapshot.untar import unpack_layer

    tree = store.stage() / "tree"
    tree.mkdir()
    tree.chmod(0o755)
    with open(blob, "rb") as raw:
        stream: IO[bytes] = raw
        if "zstd" in media_type:
            import zstandard

            # Several frames are one stream (zstd -T, pzstd and llbkit write such layers).
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        unpack_layer(stream, str(tree), store.format, what=f"imported layer {blob.name}")
    store.fill_layer(layer, tree)
    _remove(tree.parent)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def _remove(path: Path) -> None:
    from llbkit.core.fs.iterative import rmtree

    rmtree(path, ignore_errors=True)
