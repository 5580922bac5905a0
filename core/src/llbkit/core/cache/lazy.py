"""Lazy layers: imported from a remote cache as a blob's description, fetched when first needed.

A cache hit on an imported record costs no download. The blob comes when a step needs the files
(:func:`materialize`, before the step runs) or an exporter needs the bytes (:func:`fetch_blob`);
a push to the registry the cache lives in mounts the blob instead. Where each blob can be
fetched from is known only to the process that imported it (:attr:`Store.fetchers`); a lazy layer
that no import of this process can fetch makes its results misses (:func:`fetchable`).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio

from llbkit.core.cache.store import ShownWork, Store
from llbkit.core.errors import UserError, first_error

if TYPE_CHECKING:
    from llbkit.core.plugins.lazysource import GrowingBlob

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

#: who unpacks a blob while it downloads: a fetcher that can hand its download over as it
#: starts hands it here (:class:`~llbkit.core.plugins.lazysource.GrowingBlob`)
streaming: ContextVar[Callable[[GrowingBlob], None] | None] = ContextVar("streaming", default=None)


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
                # What is unpacked in vain goes with the stage (the tree that counts is moved).
                async with store.staged() as stage:
                    tree = await _unpacked(store, stage, digest, media_type, shown, limiter=limiter)
                    await anyio.to_thread.run_sync(store.fill_layer, layer, tree, limiter=limiter)
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


class _Streamed:
    """One download handed over as it started, and the tree it is unpacked into."""

    def __init__(self, blob: GrowingBlob, tree: Path) -> None:
        self.blob = blob
        self.tree = tree
        self.error: BaseException | None = None
        self.download_failed = False


async def _unpacked(
    store: Store,
    stage: Path,
    digest: str,
    media_type: str,
    shown: ShownWork | None,
    *,
    limiter: anyio.CapacityLimiter | None,
) -> Path:
    """The blob's files, in a new tree under ``stage``: unpacked while the blob downloads
    when its fetcher hands the download over (as an eager pull unpacks), else from the blob
    once it is here. Nothing unpacked counts before the blob is verified: the tree of a
    download that fails is left to the stage, and its fetch says why."""
    what = f"imported layer {digest.removeprefix('sha256:')}"
    unpack = functools.partial(_unpack_into, media_type=media_type, fmt=store.format, what=what)
    extracting = f"extracting {digest}"

    def started() -> None:  # shown from the event loop, not the thread: one opening of it
        if shown is not None:
            shown.status(extracting)

    blob, tree = await _fetched(store, stage, digest, unpack, started, limiter=limiter)
    if tree is None:
        tree = _new_tree(stage)
        started()
        await anyio.to_thread.run_sync(_unpack_file, unpack, blob, tree, limiter=limiter)
    if shown is not None:
        shown.status(extracting, done=True)
    return tree


async def _fetched(
    store: Store,
    stage: Path,
    digest: str,
    unpack: Callable[[IO[bytes], Path], None],
    started: Callable[[], None],
    *,
    limiter: anyio.CapacityLimiter | None,
) -> tuple[Path, Path | None]:
    """The blob (:func:`fetch_blob`), and the tree under ``stage`` it was unpacked into as it
    came, if its fetcher handed the download over."""
    streams: list[_Streamed] = []

    def unpack_streamed(stream: _Streamed) -> None:
        try:
            with stream.blob.reader() as reader:
                unpack(reader, stream.tree)
        except Exception as err:  # a failed download's reader raises too: the fetch says why
            if stream.blob.failed():
                stream.download_failed = True
            else:
                stream.error = err
        finally:
            stream.blob.close()

    async with anyio.create_task_group() as tg:

        def streamed(blob: GrowingBlob) -> None:
            stream = _Streamed(blob, _new_tree(stage))
            streams.append(stream)
            started()
            run = functools.partial(anyio.to_thread.run_sync, limiter=limiter)
            tg.start_soon(run, unpack_streamed, stream)

        token = streaming.set(streamed)
        try:
            blob = await fetch_blob(store, digest, limiter)
        finally:
            streaming.reset(token)
    # The blob is here, verified: the download handed over that did not fail brought it.
    whole = next((s for s in reversed(streams) if not s.download_failed), None)
    if whole is None:
        return blob, None
    if whole.error is not None:
        raise whole.error
    return blob, whole.tree


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


def _new_tree(stage: Path) -> Path:
    tree = Path(tempfile.mkdtemp(dir=stage, prefix="tree-"))
    tree.chmod(0o755)
    return tree


def _unpack_file(unpack: Callable[[IO[bytes], Path], None], blob: Path, tree: Path) -> None:
    with open(blob, "rb") as raw:
        unpack(raw, tree)


def _unpack_into(raw: IO[bytes], tree: Path, *, media_type: str, fmt: str, what: str) -> None:
    from llbkit.core.snapshot.untar import unpack_layer

    stream = raw
    if "zstd" in media_type:
        import zstandard

        # Several frames are one stream (zstd -T, pzstd and llbkit write such layers).
        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    unpack_layer(stream, str(tree), fmt, what=what)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
