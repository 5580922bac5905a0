"""``--export-cache``: the records of what a build found and made, in BuildKit's cache format.

Every vertex of the build gives a record per output key (its definition key; for a result, also
every other key that finds it: a content key, a key another machine found it by), linked to its
inputs' records with the selectors the op reads them with. ``mode=min`` gives results only to
records whose layers are all in a final result (the final stage's steps, as BuildKit's min
exports results whose blobs the final result made); ``mode=max`` to every record but sources'
(BuildKit exports no source results: they are fetched again). Layer blobs are compressed as
asked, sent only where the cache lacks them, several at once, and the manifest last.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from llbkit.core.cache.lazy import fetch_blob, materialize_for_blobs
from llbkit.core.cache.remote import (
    CACHE_CONFIG,
    ExportRecord,
    RemoteLayer,
    encode_config,
    encode_inline,
    encode_manifest,
)
from llbkit.core.control.cache_calls import retried
from llbkit.core.errors import ConfigError, first_error
from llbkit.core.plugins.blobcheck import BlobFile
from llbkit.core.plugins.compression import compression_level
from llbkit.core.solver.keys import result_key

if TYPE_CHECKING:
    from llbkit.core.cache.store import Chain, Store
    from llbkit.core.plugins.cache_backend import CacheStore
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.solver.buildkit_keys import Content
    from llbkit.core.solver.solver import GraphNode

__all__ = ["CORE_KEYS", "CacheOptions", "ExportPlan", "split_attrs"]

#: attributes core reads from every ``--export-cache``/``--import-cache``
CORE_KEYS = (
    "mode",
    "ignore-error",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
)
#: how many blobs are sent at once
PARALLEL = 4


@dataclass(frozen=True)
class CacheOptions:
    """What core reads from a cache entry's attributes (BuildKit's defaults)."""

    mode: str = "min"
    ignore_error: bool = False
    compression: str = "gzip"
    level: int | None = None
    force: bool = False
    oci: bool = True
    image_manifest: bool = False


def _bool(what: str, key: str, value: str) -> bool:
    """Go's ``strconv.ParseBool`` words, and an empty value for true (``force-compression``)."""
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ConfigError(f"{what}: {key}={value!r} is not a boolean (true or false)")


def split_attrs(attrs: Mapping[str, str], what: str) -> tuple[CacheOptions, dict[str, str]]:
    """Core's options and the backend's own attributes, each value checked by its key."""
    own = {k: v for k, v in attrs.items() if k not in CORE_KEYS}
    mode = attrs.get("mode", "min")
    if mode not in ("min", "max"):
        raise ConfigError(f"{what}: mode={mode!r} is not min or max")
    compression = attrs.get("compression", "gzip")
    if compression not in ("gzip", "zstd", "uncompressed"):
        raise ConfigError(
            f"{what}: compression={compression!r} is not one of gzip, zstd, uncompressed"
        )
    level = compression_level(compression, attrs.get("compression-level", ""), what)
    options = CacheOptions(
        mode=mode,
        ignore_error=_bool(what, "ignore-error", attrs["ignore-error"])
        if "ignore-error" in attrs
        else False,
        compression=compression,
        level=level,
        force=_bool(what, "force-compression", attrs["force-compression"])
        if "force-compression" in attrs
        else False,
        oci=_bool(what, "oci-mediatypes", attrs["oci-mediatypes"])
        if "oci-mediatypes" in attrs
        else True,
        image_manifest=_bool(what, "image-manifest", attrs["image-manifest"])
        if "image-manifest" in attrs
        else False,
    )
    if options.image_manifest and not options.oci:
        raise ConfigError(f"{what}: image-manifest=true needs oci-mediatypes=true")
    return options, own


@dataclass
class ExportPlan:
    """The records of one build, ready to be exported any number of ways."""

    store: Store
    graph: Mapping[str, GraphNode]
    #: each platform's final result chain
    finals: Mapping[str, Chain]
    threads: anyio.CapacityLimiter
    _blobs: dict[tuple[str, int | None, bool], dict[int, RemoteLayer]] = field(default_factory=dict)

    def _selected(self, mode: str, final: Sequence[Chain]) -> dict[str, Chain]:
        """Result key -> chain, for the results the mode exports."""
        allowed = {layer for chain in final for layer in chain}
        chosen: dict[str, Chain] = {}
        for node in self.graph.values():
            if node.kind == "source" or node.outputs is None:
                continue
            for rkey, chain in node.outputs:
                if not chain:
                    continue
                if mode == "max" or all(layer in allowed for layer in chain):
                    chosen[rkey] = chain
        return chosen

    async def _layers(
        self, chains: Sequence[Chain], options: CacheOptions
    ) -> dict[int, RemoteLayer]:
        """Each layer of ``chains`` as a blob compressed as asked (made once per layer)."""
        from llbkit.core.cache.blobs import MEDIA_TYPES, layer_blobs

        wanted = tuple(dict.fromkeys(layer for chain in chains for layer in chain))
        variant = (options.compression, options.level, options.force)
        known = self._blobs.setdefault(variant, {})
        missing = tuple(layer for layer in wanted if layer not in known)
        if missing:
            store = self.store
            await materialize_for_blobs(
                store,
                missing,
                f"{options.compression}:{options.level}:None",
                force=options.force,
                limiter=self.threads,
            )
            made = await anyio.to_thread.run_sync(
                functools.partial(
                    layer_blobs,
                    store,
                    missing,
                    compression=options.compression,
                    level=options.level,
                    force=options.force,
                ),
                limiter=self.threads,
            )
            created = store.db.layers_created(missing)
            for layer, blob in zip(missing, made, strict=True):
                known[layer] = RemoteLayer(
                    blob.digest,
                    blob.diff_id,
                    blob.size,
                    MEDIA_TYPES["oci", blob.compression],
                    round(created.get(layer, 0.0) * 1e9),
                )
        return {layer: known[layer] for layer in wanted}

    async def records(
        self, options: CacheOptions, platforms: Sequence[str] | None = None
    ) -> list[ExportRecord]:
        """The records to export: every key of the build, results as the mode says."""
        finals = [c for p, c in self.finals.items() if platforms is None or p in platforms]
        chosen = self._selected(options.mode, finals)
        layers = await self._layers(list(chosen.values()), options)
        aliases = await anyio.to_thread.run_sync(
            lambda: {rkey: self.store.aliases(rkey) for rkey in chosen}, limiter=self.threads
        )
        records: dict[str, ExportRecord] = {}
        for node in self.graph.values():
            outputs = node.outputs or ()
            count = max(1, len(outputs))
            for n in range(count):
                digest = result_key(node.key, n)
                inputs = [
                    [(selector, result_key(self.graph[dep].key, index))]
                    for dep, index, selector in node.inputs
                ]
                chain = None
                created = 0
                names = [digest]
                if n < len(outputs) and outputs[n][0] in chosen:
                    rkey, found = outputs[n]
                    chain = tuple(layers[layer] for layer in found)
                    created = chain[-1].created if chain else 0
                    names = list(dict.fromkeys([digest, rkey, *aliases[rkey]]))
                for name in names:
                    if name not in records or (chain and records[name].chain is None):
                        records[name] = ExportRecord(name, inputs, chain, created)
        for record in list(records.values()):  # an output nothing solved still gets its record
            for links in record.inputs:
                for _, link in links:
                    records.setdefault(link, ExportRecord(link))
        await anyio.to_thread.run_sync(
            self._buildkit_records, records, chosen, layers, limiter=self.threads
        )
        return list(records.values())

    def _buildkit_records(
        self,
        records: dict[str, ExportRecord],
        chosen: Mapping[str, Chain],
        layers: Mapping[int, RemoteLayer],
    ) -> None:
        """Add the records BuildKit finds the build's results by (see :class:`_BuildKitNames`)."""
        names = _BuildKitNames(self.store, self.graph, records, chosen, layers)
        for node in list(self.graph.values()):
            for output in range(max(1, len(node.outputs or ()))):
                names.of(node.digest, output)

    async def inline(self, platform: str, diff_ids: Sequence[str]) -> bytes | None:
        """The ``moby.buildkit.cache.v0`` records of the image of ``platform`` (min mode).

        Records name layers by their diff ids, which every compression of a layer shares: the
        blobs the image exporter made serve, whatever compression it chose."""
        options = CacheOptions(compression=self._compression_made())
        records = await self.records(options, [platform] if platform in self.finals else None)
        # Inline records name layers by index into the image: match them by diff id.
        by_diff = [
            ExportRecord(
                r.digest,
                r.inputs,
                None
                if r.chain is None
                else tuple(RemoteLayer(layer.diff_id, "", 0, "") for layer in r.chain),
                r.created,
                r.ident,
            )
            for r in records
        ]
        return encode_inline(by_diff, list(diff_ids))

    def _compression_made(self) -> str:
        """A compression the final layers already have blobs in (the image exporter's)."""
        layers = [layer for chain in self.finals.values() for layer in chain]
        found = self.store.db.blob_variants(layers)
        for compression in ("gzip", "zstd", "uncompressed"):
            if found and all(compression in v for v in found.values()):
                return compression
        return "gzip"

    async def push(
        self, remote: CacheStore, options: CacheOptions, progress: ProgressSink
    ) -> dict[str, Any]:
        """Send the cache to ``remote``: missing blobs (several at once), then the config,
        then the manifest. Returns the manifest's descriptor (``cache.manifest``)."""
        import hashlib

        progress.status("preparing build cache for export")
        records = await self.records(options)
        as_config = remote.index_format == "config"  # s3, azblob, gha: no manifest
        config, layers = encode_config(records, annotate=as_config)
        manifest, media_type, config_digest = encode_manifest(
            config, layers, oci=options.oci, image_manifest=options.image_manifest
        )
        limit = anyio.Semaphore(PARALLEL)

        async def send(layer: RemoteLayer) -> None:
            # As BuildKit shows it: a manifest cache (registry, local) shows every layer, done
            # at once when the cache has it; a config cache (s3, azblob, gha) only the ones it
            # uploads. Neither counts bytes.
            name = f"writing layer {layer.digest}"
            async with limit:
                if not as_config:
                    progress.status(name)
                if not await retried(lambda: remote.has_blob(layer.digest)):
                    if as_config:
                        progress.status(name)
                    path = await fetch_blob(self.store, layer.digest, self.threads)
                    await retried(
                        lambda: remote.write_blob(layer.digest, layer.size, BlobFile(path))
                    )
                elif as_config:
                    return
                progress.status(name, done=True)

        try:
            async with anyio.create_task_group() as tg:
                for layer in {layer.digest: layer for layer in layers}.values():
                    tg.start_soon(send, layer)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        progress.status("preparing build cache for export", done=True)
        if as_config:  # the config is the index: written last, like a manifest (unshown)
            await retried(lambda: remote.write_index(config))
            return {"mediaType": CACHE_CONFIG, "digest": config_digest, "size": len(config)}
        name = f"writing config {config_digest}"
        progress.status(name)
        if not await retried(lambda: remote.has_blob(config_digest)):
            await retried(
                lambda: remote.write_blob(config_digest, len(config), _bytes_chunks(config))
            )
        progress.status(name, done=True)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        name = f"writing manifest {digest}"
        progress.status(name)
        await retried(lambda: remote.write_index(manifest))
        progress.status(name, done=True)
        return {"mediaType": media_type, "digest": digest, "size": len(manifest)}


async def _bytes_chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def descriptor_text(desc: Mapping[str, Any]) -> str:
    """``cache.manifest`` as BuildKit answers it: the descriptor's JSON."""
    return json.dumps(dict(desc), separators=(",", ":"))


@dataclass
class _BuildKitNames:
    """The records BuildKit finds a build's results by, its own keys (see
    :mod:`llbkit.core.solver.buildkit_keys`), added to an export's: so BuildKit importing the
    cache hits. Each step's record is linked from its inputs' records, down to the images'.
    A step on a client's directory has none (BuildKit's key of it is random: it finds the
    step by the content it read), nor has what is built on it."""

    store: Store
    graph: Mapping[str, GraphNode]
    records: dict[str, ExportRecord]
    chosen: Mapping[str, Chain]
    layers: Mapping[int, RemoteLayer]
    _names: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    _roots: dict[tuple[str, int, Content], str | None] = field(default_factory=dict)

    def of(self, digest: str, output: int) -> list[str]:
        """The names of the records of ``output`` of vertex ``digest`` (added when new)."""
        if (digest, output) not in self._names:
            self._names[(digest, output)] = []  # while it is named: a cycle finds none
            self._names[(digest, output)] = self._add(digest, output)
        return self._names[(digest, output)]

    def _add(self, digest: str, output: int) -> list[str]:
        node = self.graph.get(digest)
        names = None if node is None else node.buildkit
        if node is None or names is None or output >= len(names.records):
            return []
        digests = names.records[output]
        if not node.inputs:  # found by its digest alone, so named by it
            for found in digests:
                self.records.setdefault(found, ExportRecord(found))
            return list(digests)
        inputs = []
        for index, ((dep, dep_output, _), selector) in enumerate(
            zip(node.inputs, names.selectors, strict=True)
        ):
            links = [(selector, name) for name in self.of(dep, dep_output)]
            reads = names.content[index] if index < len(names.content) else None
            root = None if reads is None else self._content_root(dep, dep_output, reads)
            if root is not None:
                self.records.setdefault(root, ExportRecord(root))
                links.append(("", root))
            if not links:
                return []  # BuildKit cannot reach it
            inputs.append(links)
        chain = None
        created = 0
        outputs = node.outputs or ()
        if output < len(outputs) and outputs[output][0] in self.chosen:
            chain = tuple(self.layers[layer] for layer in outputs[output][1])
            created = chain[-1].created if chain else 0
        made = []
        for found in digests:
            ident = f"{found}@{result_key(node.key, output)}"
            self.records[ident] = ExportRecord(found, inputs, chain, created, ident)
            made.append(ident)
        return made

    def _content_root(self, dep: str, output: int, reads: Content) -> str | None:
        """The record of BuildKit's content key of what a step reads of a client's
        directory (the input BuildKit knows by no other key), if the build has its files."""
        from llbkit.core.fs.buildkit_contenthash import BuildKitHasher, content_key
        from llbkit.core.solver import buildkit_keys as bk

        node = self.graph.get(dep)
        if node is None or node.buildkit is None or not node.buildkit.random or not node.outputs:
            return None
        if output >= len(node.outputs) or reads is None:
            return None
        memo = (dep, output, reads)
        if memo not in self._roots:
            with self.store.view(node.outputs[output][1]) as tree:
                try:
                    found = content_key(BuildKitHasher(tree, local=True), reads)
                except OSError:
                    self._roots[memo] = None
                else:
                    self._roots[memo] = bk.output_key(found, -1)
        return self._roots[memo]
