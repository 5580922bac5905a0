"""Results as drivers see them: a leased chain of layers behind the ``Result`` contract."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio

from llbkit.core.cache.lazy import fetch_blob, materialize, materialize_for_blobs
from llbkit.core.cache.store import Chain, Store
from llbkit.core.fs.iterative import rmtree
from llbkit.core.plugins.context import BlobSource, Compression, LayerDescriptor, LayerOptions
from llbkit.core.snapshot.mount import bind_readonly, unmount

__all__ = ["ResultRef"]


class ResultRef:
    """A built result: a chain of layers in the store, named by a portable key.

    Valid while the lease it was found under is held (the build's); core reads :attr:`chain`,
    drivers only what the ``Result`` contract declares.
    """

    def __init__(self, store: Store, key: str, chain: Chain) -> None:
        self._store = store
        self._key = key
        self.chain = chain
        self._digests: set[str] = set()

    def __repr__(self) -> str:
        return f"ResultRef({self._key[:19]}…, {len(self.chain)} layers)"

    @property
    def key(self) -> str:
        return self._key

    @asynccontextmanager
    async def mount(self) -> AsyncIterator[Path]:
        """The tree, read-only: a view of the chain, behind a read-only bind mount where this
        process may mount (a store layer is shared by every result that has it)."""
        await materialize(self._store, self.chain, None)
        view = self._store.view(self.chain)
        path = await anyio.to_thread.run_sync(view.__enter__)
        try:
            async with self._readonly(path) as shown:
                yield shown
        finally:
            await anyio.to_thread.run_sync(view.__exit__, None, None, None)

    @asynccontextmanager
    async def _readonly(self, path: Path) -> AsyncIterator[Path]:
        if os.geteuid() != 0:
            yield path  # without privileges, the contract's "do not write" has to do
            return
        target = self._store.stage() / "ro"
        target.mkdir()
        await anyio.to_thread.run_sync(bind_readonly, path, target)
        try:
            yield target
        finally:
            await anyio.to_thread.run_sync(unmount, target)
            rmtree(target.parent, ignore_errors=True)

    async def layers(self, options: LayerOptions) -> Sequence[LayerDescriptor]:
        from llbkit.core.cache.blobs import MEDIA_TYPES, layer_blobs  # only exports need tars

        variant = f"{options.compression}:{options.level}:{options.epoch}"
        await materialize_for_blobs(
            self._store, self.chain, variant, force=options.force, limiter=None
        )
        made = await anyio.to_thread.run_sync(
            functools.partial(
                layer_blobs,
                self._store,
                self.chain,
                compression=options.compression,
                level=options.level,
                epoch=options.epoch,
                force=options.force,
            )
        )
        layers = list(dict.fromkeys(self.chain))
        described = self._store.db.layer_descriptions(layers)
        found = [
            LayerDescriptor(
                b.digest,
                b.diff_id,
                b.size,
                cast(Compression, b.compression),
                MEDIA_TYPES["oci", b.compression],
                described.get(layer, ""),
            )
            for layer, b in zip(layers, made, strict=True)
        ]
        self._digests.update(d.digest for d in found)
        return found

    async def blob_path(self, digest: str) -> Path:
        if digest not in self._digests:
            raise KeyError(f"{digest} is not a layer of this result (ask layers() first)")
        return await fetch_blob(self._store, digest, None)  # an imported one comes now

    def blob_sources(self, digest: str) -> Sequence[BlobSource]:
        from llbkit.core.cache.blobs import blob_sources

        return [BlobSource(host, repo) for host, repo in blob_sources(self._store, digest)]
