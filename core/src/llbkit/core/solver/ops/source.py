"""SourceOps: what a source driver fetches, committed as layers (an image, one per layer)."""

from __future__ import annotations

import functools
import json
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio

from llbkit.core.cache.lazy import IMAGE_ORIGIN, fetchable
from llbkit.core.cache.store import Chain, Store
from llbkit.core.llb.definition import Vertex
from llbkit.core.plugins.context import Platform
from llbkit.core.plugins.lazysource import LazySourceJob, RemoteLayer
from llbkit.core.plugins.source import (
    FetchedLayer,
    LayeredSourceJob,
    SourceJob,
    StackedSourceJob,
)
from llbkit.core.solver.buildkit_keys import chain_id
from llbkit.core.solver.keys import key_digest
from llbkit.core.solver.ops.base import Op, OpContext
from llbkit.core.sources._base import MirroredJob

if TYPE_CHECKING:
    from llbkit.core.drivers import Drivers
    from llbkit.core.plugins.context import ClientIO

__all__ = ["SourceOp", "commit_image_layers"]


class SourceOp(Op):
    kind = "source"

    def __init__(self, vertex: Vertex) -> None:
        super().__init__(vertex)
        self._job: SourceJob | None = None
        #: BuildKit's keys of this source (known with its key), for its records in a cache
        #: BuildKit exported: the driver's key, and an image's chain id
        self.buildkit_keys: list[str] = []

    @property
    def identifier(self) -> str:
        return self.op.source.identifier

    @property
    def is_local(self) -> bool:
        """A client's directory: shown as transferred, never as cached, and never shared
        between builds of different clients."""
        return self.identifier.startswith("local://")

    def default_name(self, names: Mapping[str, str]) -> str:
        name = self.identifier
        include = self.op.source.attrs.get("local.includepattern", "")
        if self.is_local and include:
            try:
                patterns = json.loads(include)
            except (ValueError, RecursionError):
                patterns = []
            if isinstance(patterns, list) and len(patterns) == 1:
                name += f" ({patterns[0]})"
        return name

    def description(self, name: str) -> str:
        """The layer's description (an image's bare layer in history, ``du``'s), as BuildKit
        describes what its own sources make: ``local source for NAME``, ``http url URL``;
        any other source's is its step's ``name``."""
        if self.is_local:
            return f"local source for {self.identifier.removeprefix('local://')}"
        if self.identifier.startswith(("http://", "https://")):
            return f"http url {self.identifier}"
        return name

    def platform(self) -> Platform | None:
        if not self.op.HasField("platform"):
            return None
        p = self.op.platform
        return Platform(p.OS, p.Architecture, p.Variant)

    async def job(self, drivers: Drivers) -> SourceJob:
        """The source driver's job for this op (parsed once)."""
        if self._job is None:
            self._job = await drivers.source_job(
                self.identifier, dict(self.op.source.attrs), self.platform()
            )
        return self._job

    async def cache_key(self, drivers: Drivers, client: ClientIO) -> str:
        """BuildKit's source key: the driver's key under ``buildkit.source.v0:``."""
        job = await self.job(drivers)
        key = await job.cache_key(client)
        self.buildkit_keys = [key]
        if isinstance(job, StackedSourceJob):  # an image is known by its layers' chain too
            diff_ids = await job.diff_ids()
            if diff_ids:
                self.buildkit_keys.append(chain_id(diff_ids))
        return key_digest({"source": f"buildkit.source.v0:{key}"})

    def discard(self) -> None:
        """Drop what the job fetched only for its key (no build uses the vertex any more)."""
        if self._job is not None:
            self._job.discard()

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        """Fetch the job's content into new layers."""
        job = await self.job(ctx.drivers)
        store = ctx.store
        if isinstance(job, StackedSourceJob):
            return [await _stacked(job, ctx)]
        if isinstance(job, LayeredSourceJob):
            # An image: one store layer per image layer, its original blob kept for export.
            async with store.staged() as stage:
                layers = await job.fetch_layers(ctx.client, stage, ctx.progress, store.format)
                chain = await anyio.to_thread.run_sync(
                    commit_image_layers,
                    store,
                    layers,
                    ctx.name,
                    job.record_type,
                    limiter=ctx.threads,
                )
            return [chain]
        async with store.staged() as stage:
            tree = stage / "tree"
            tree.mkdir()
            await job.fetch(ctx.client, tree, ctx.progress)
            described = self.description(ctx.name)
            layer = await anyio.to_thread.run_sync(
                lambda: store.commit_layer(
                    tree, description=described, record_type=job.record_type
                ),
                limiter=ctx.threads,
            )
        mirrored = job if isinstance(job, MirroredJob) else None
        if mirrored is None:
            return [(layer,)]
        if (known := mirrored.tree_digests()) is not None:
            store.remember_digests(layer, known)
        # Files hardlinked from a place other layers link too (a local context's mirror).
        if (name := mirrored.inode_pool()) is not None:
            from llbkit.core.cache.shares import join_pool

            await anyio.to_thread.run_sync(join_pool, store, layer, name, limiter=ctx.threads)
        return [(layer,)]


#: by store: the stacks of layers (their diff ids, bottom first) a pull of this process is
#: making, each set when that pull has ended (a pull of an image sharing them waits for it)
_MAKING: weakref.WeakKeyDictionary[Store, dict[tuple[str, ...], anyio.Event]] = (
    weakref.WeakKeyDictionary()
)


async def _stacked(job: StackedSourceJob, ctx: OpContext) -> Chain:
    """An image's layers, the bottom ones the store has reused, the rest pulled: a layer is
    pulled once however many images of a build (or of builds since) stand on it."""
    store = ctx.store
    ids = tuple(await job.diff_ids())
    making = _MAKING.setdefault(store, {})
    while True:
        have = await anyio.to_thread.run_sync(store.find_stack, ids, limiter=ctx.threads)
        if ids and len(have) == len(ids):
            return store.compact(have)
        # The longest stack another pull is making that this image stands on: wait for it.
        others = [making[ids[:n]] for n in range(len(ids), len(have), -1) if ids[:n] in making]
        if not others:
            break
        await others[0].wait()
    have = _fetchable_part(store, have)
    if ctx.blobs_only and isinstance(job, LazySourceJob):
        remote = await job.remote_layers()
        # (A chain too deep to mount is flattened, which needs the files.)
        deepest = store.max_depth if store.format == "overlay" else 1
        if remote is not None and tuple(r.diff_id for r in remote) == ids and len(ids) <= deepest:
            # Nothing reads the files: the layers stay blobs until something does (an export
            # moves the blobs, a later step fetches and unpacks them), as BuildKit's pull.
            return await anyio.to_thread.run_sync(
                _record_remote, store, remote, have, limiter=ctx.threads
            )
    mine = [ids[:n] for n in range(len(have) + 1, len(ids) + 1)]
    done = anyio.Event()
    making.update(dict.fromkeys(mine, done))
    try:
        async with store.staged() as stage:
            layers = await job.fetch_layers(
                ctx.client, stage, ctx.progress, store.format, skip=len(have)
            )
            return await anyio.to_thread.run_sync(
                functools.partial(commit_image_layers, below=have),
                store,
                layers,
                ctx.name,
                job.record_type,
                limiter=ctx.threads,
            )
    finally:
        for stack in mine:
            if making.get(stack) is done:
                del making[stack]
        done.set()


def _fetchable_part(store: Store, have: Chain) -> Chain:
    """The bottom of ``have`` up to its first layer left unpulled whose blob this process has
    no way to fetch (another image's, which shares its diff id): that one is pulled again."""
    lazy = store.lazy(have)
    for n, layer in enumerate(have):
        if layer in lazy and not fetchable(store, (layer,)):
            return have[:n]
    return have


def _record_remote(store: Store, layers: Sequence[RemoteLayer], below: Chain) -> Chain:
    """Record the layers above ``below`` unpulled (a row and the blob's description each),
    with the repository a push can mount each blob from."""
    chain: list[int] = list(below)
    now = time.time()
    for item in layers[len(below) :]:
        layer = store.import_layer(
            parent=chain[-1] if chain else None,
            digest=item.digest,
            diff_id=item.diff_id,
            size=item.size,
            media_type=item.media_type,
            description=item.description,
            origin=IMAGE_ORIGIN,
            created=now,
        )
        chain.append(layer)
        if item.source is not None:
            with store.lock:
                store.db.add_blob_source(item.digest, item.source.registry, item.source.repository)
    return tuple(chain)


def commit_image_layers(
    store: Store,
    layers: Sequence[FetchedLayer],
    name: str,
    record_type: str,
    *,
    below: Chain = (),
) -> Chain:
    """Commit pulled layers bottom first on the store's ``below``, each with its original
    blob registered."""
    from llbkit.core.cache.blobs import LayerBlob, register_blob  # tar and gzip: images only

    chain: list[int] = list(below)
    for n, item in enumerate(layers, len(below)):
        layer = store.commit_layer(
            item.tree,
            parent=chain[-1] if chain else None,
            description=item.description or f"{name} layer {n + 1}/{len(below) + len(layers)}",
            record_type=record_type,
        )
        chain.append(layer)
        media = item.media_type
        compression = "gzip" if "gzip" in media else "zstd" if "zstd" in media else "uncompressed"
        if item.diff_id:
            blob = LayerBlob(item.digest, item.diff_id, item.size, compression)
            source = None if item.source is None else (item.source.registry, item.source.repository)
            register_blob(store, layer, item.blob, blob, media_type=media, source=source)
    return store.compact(tuple(chain))
