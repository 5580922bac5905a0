"""``--import-cache``: a remote cache opened for a build and asked after the local store.

The cache's manifest and config are read once, before the build. A hit on an imported record
makes the result's layers lazy layers of the local store (a row and a blob description, no
files) and records the keys locally, so the next build finds them without importing; the blobs
come only when a step or an exporter needs them (:mod:`llbkit.core.cache.lazy`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
import anyio.from_thread

from llbkit.core.cache.linkgraph import LinkGraph
from llbkit.core.cache.remote import (
    CacheManifest,
    ImportedRecord,
    ImportedRecords,
    InvalidCacheError,
    RemoteLayer,
    decode_config,
    decode_inline,
    parse_manifest,
)
from llbkit.core.control.cache_calls import retried
from llbkit.core.errors import UserError, one_error
from llbkit.core.plugins.cache_backend import CacheStore, EmbedInImage, TransientCacheError
from llbkit.core.solver.cache_sources import Hit

if TYPE_CHECKING:
    from llbkit.core.cache.store import Store

__all__ = ["ImportedCache", "open_import", "read_records"]

WarnFn = Callable[[str], None]

#: how many blobs of a cache are checked or fetched at once
PARALLEL = 8
#: bytes of a download gathered before they are hashed and written (at most four such held:
#: two queued, one being written, one filling)
_HOLD = 4 << 20


class ImportedCache:
    """One ``--import-cache`` as a cache source of the solver (lookups run in worker threads)."""

    def __init__(
        self,
        store: Store,
        remote: CacheStore,
        records: ImportedRecords,
        warn: WarnFn,
    ) -> None:
        self.store = store
        self.remote = remote
        self.name = remote.name
        self.records = records
        self.graph = records.graph
        self.warn = warn
        self._present: dict[str, bool] = {}
        self._said: set[str] = set()
        # Records whose results are the same layers are other names of one result.
        by_chain: dict[tuple[str, ...], list[str]] = {}
        for record in records.values():
            for chain in record.chains:
                by_chain.setdefault(tuple(layer.digest for layer in chain), []).append(
                    record.digest
                )
        self._aliases = by_chain
        source = remote.blob_source()
        self.source = None if source is None else (source.registry, source.repository)
        # Any lazy layer with one of these blobs (imported by this build or an earlier one)
        # can be fetched while the import is open.
        store.fetchers.add(self.blobs(), self.fetch)

    def close(self) -> None:
        """The build is over: this import no longer fetches (others may still)."""
        self.store.fetchers.remove(self.blobs(), self.fetch)

    def blobs(self) -> set[str]:
        records = self.records.values()
        return {layer.digest for r in records for c in r.chains for layer in c} | {
            layer.digest for n in self.graph.nodes for c in n.chains for layer in c
        }

    async def fetch(self, digest: str, path: Path) -> str:
        """Download one blob into ``path`` (from the start again after a transient failure);
        returns what it hashes to (checked by the caller)."""
        try:
            return await retried(lambda: self._download(digest, path))
        except TransientCacheError as err:  # tried with patience: now the cache is named
            raise UserError(f"{self.name}: cannot fetch blob {digest}: {err}") from None

    async def _download(self, digest: str, path: Path) -> str:
        """One download into ``path``; returns what it hashes to. Bytes gather into pieces of
        4 MiB (a small blob is one write), each hashed and written on a worker thread while
        the next piece downloads."""
        import hashlib

        sha = hashlib.sha256()
        pieces, arriving = anyio.create_memory_object_stream[bytes](2)

        def absorb(piece: bytes, out: BinaryIO) -> None:
            sha.update(piece)  # hashlib lets go of the GIL: the download goes on meanwhile
            out.write(piece)

        async def write(out: BinaryIO) -> None:
            async with arriving:
                async for piece in arriving:
                    await anyio.to_thread.run_sync(absorb, piece, out)

        async def receive() -> None:
            async with pieces:
                pending: list[bytes] = []
                held = 0
                async for chunk in self.remote.read_blob(digest):
                    pending.append(chunk)
                    held += len(chunk)
                    if held >= _HOLD:
                        await pieces.send(b"".join(pending))
                        pending, held = [], 0
                await pieces.send(b"".join(pending))

        try:
            out = await anyio.to_thread.run_sync(path.open, "wb")
            try:
                with one_error():
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(write, out)
                        await receive()
            finally:
                out.close()  # at once, cancelled or not
        except KeyError:
            raise UserError(f"{self.name}: blob {digest} is missing from the cache") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{self.name}: cannot fetch blob {digest}: {err}") from None
        return "sha256:" + sha.hexdigest()

    def _present_all(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` the cache still has, asked all at once (from a worker
        thread); a cache that cannot say about one makes it a miss, with a warning."""
        unknown = [d for d in dict.fromkeys(digests) if d not in self._present]
        if unknown:
            anyio.from_thread.run(self._check, unknown)
        return {d for d in digests if self._present.get(d)}

    async def _check(self, digests: Sequence[str]) -> None:
        limit = anyio.Semaphore(PARALLEL)

        async def one(digest: str) -> None:
            async with limit:
                try:
                    self._present[digest] = await retried(lambda: self.remote.has_blob(digest))
                except Exception as err:  # whatever a plugin raises: a miss, said once
                    self._present[digest] = False
                    self._say(f"{self.name}: cannot check blob {digest} ({err}); its steps run")

        async with anyio.create_task_group() as tg:
            for digest in digests:
                tg.start_soon(one, digest)

    def _say(self, message: str) -> None:
        """A warning, once (said on the event loop's thread)."""
        if message not in self._said:
            self._said.add(message)
            try:
                anyio.from_thread.run_sync(self.warn, message)
            except RuntimeError:  # already on the event loop's thread
                self.warn(message)

    def lookup(self, key: str) -> Hit | None:
        record = self.records.get(key)
        if record is None:
            return None
        return self._take(key, record.chains)

    def links(self) -> LinkGraph:
        return self.graph

    def lookup_node(self, node: int, key: str) -> Hit | None:
        """The result of the record ``node`` of :attr:`graph` (BuildKit's key found it),
        recorded in the local store under ``key``."""
        return self._take(key, self.graph.nodes[node].chains)

    def _take(self, key: str, chains: Sequence[Sequence[RemoteLayer]]) -> Hit | None:
        """The first of ``chains`` whose blobs the cache has, adopted under ``key``."""
        for chain in chains:
            wanted = [d.digest for d in chain if not self.store.root.content.has(d.digest)]
            present = self._present_all(wanted)
            missing = [digest for digest in wanted if digest not in present]
            if missing:
                self._say(f"{self.name} lacks blob {missing[0]}: the step it caches runs instead")
                continue
            return Hit(key, self._adopt(key, chain), self.name)
        return None

    def _adopt(self, key: str, chain: Sequence[RemoteLayer]) -> tuple[int, ...]:
        """The chain as layers of the local store, the key and its other names recorded."""
        store = self.store
        layers: list[int] = []
        explanation = json.dumps({"imported": self.name}, sort_keys=True)
        with store.batch():
            for layer in chain:
                layers.append(
                    store.import_layer(
                        parent=layers[-1] if layers else None,
                        digest=layer.digest,
                        diff_id=layer.diff_id,
                        size=layer.size,
                        media_type=layer.media_type,
                        # BuildKit's words for a layer from a remote cache (du, image history)
                        description=f"imported {layer.digest}",
                        origin=self.name,
                        created=layer.created / 1e9,
                    )
                )
                if self.source is not None:
                    store.db.add_blob_source(layer.digest, *self.source)
            found = tuple(layers)
            store.save_result(key, found)
            names = self._aliases.get(tuple(layer.digest for layer in chain), [key])
            for name in dict.fromkeys([key, *names]):
                store.link_key(name, key, self.name, explanation)
        return found


async def read_records(remote: CacheStore) -> ImportedRecords:
    """The records of the cache ``remote`` holds: a cache manifest's config, or the inline
    cache of an image (of every platform of an index). Empty when there is no cache there."""
    what = remote.name
    data = await retried(remote.read_index)
    if data is None:
        return ImportedRecords()
    if remote.index_format == "config":  # the config itself, its layers described inside
        return decode_config(data, {}, what)
    manifest = parse_manifest(data, what)
    if manifest.config is not None:
        config = await _read_small(remote, manifest.config, what)
        return decode_config(config, manifest.layers, what)
    if manifest.images:
        # An index of images: each platform's inline cache, all of them, as BuildKit merges
        # them (a build for another platform finds its own records).
        merged = ImportedRecords()
        for digest, _ in manifest.images:
            image = parse_manifest(await _read_small(remote, digest, what), what)
            records = await _inline(remote, image, what)
            merged.graph.extend(records.graph)
            for key, record in records.items():
                known = merged.setdefault(key, ImportedRecord(key, [], record.inputs))
                known.chains.extend(record.chains)
        return merged
    return await _inline(remote, manifest, what)


async def _inline(remote: CacheStore, manifest: CacheManifest, what: str) -> ImportedRecords:
    if manifest.image_config is None:
        return ImportedRecords()
    raw = await _read_small(remote, manifest.image_config, what)
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidCacheError(f"{what}: the image config is not JSON") from None
    return decode_inline(config, list(manifest.ordered), what)


async def _read_small(remote: CacheStore, digest: str, what: str) -> bytes:
    import hashlib

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in remote.read_blob(digest):
            size += len(chunk)
            if size > 1 << 20:
                raise InvalidCacheError(f"{what}: {digest} is larger than 1 MiB; refused")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        data = await retried(read)
    except KeyError:
        raise InvalidCacheError(f"{what}: {digest} is missing") from None
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise InvalidCacheError(f"{what}: {digest} does not match its content")
    return data


async def open_import(
    opened: CacheStore | EmbedInImage,
) -> tuple[CacheStore, ImportedRecords]:
    """Read an opened import; refuses ``type=inline``, which BuildKit imports as an image."""
    if isinstance(opened, EmbedInImage):
        raise UserError(
            f"{opened.name} cache is embedded in images: import it with type=registry,ref=<image>"
        )
    return opened, await read_records(opened)
