"""BuildKit's remote cache formats, as data: the cache config and the manifests that carry it.

The cache config (``application/vnd.buildkit.cacheconfig.v0``) lists layers (a blob on top of a
parent layer) and records (a key digest, the results it finds as layer chains, and links to the
records of its inputs, with selectors). Registry and local caches carry it in an OCI index or a
Docker manifest list beside the layers' descriptors (or in an OCI image manifest); inline caches
store the records alone in an image config under ``moby.buildkit.cache.v0``, with layer indexes
into the image's own layers. Everything is written sorted, so the same cache gives the same bytes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llbkit.core.cache.linkgraph import LinkGraph
from llbkit.core.errors import UserError
from llbkit.core.plugins.context import Platform

__all__ = [
    "CACHE_CONFIG",
    "CacheManifest",
    "ExportRecord",
    "ImportedRecord",
    "ImportedRecords",
    "InvalidCacheError",
    "RemoteLayer",
    "decode_config",
    "decode_inline",
    "encode_config",
    "encode_inline",
    "encode_manifest",
    "parse_manifest",
]

CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INLINE_KEY = "moby.buildkit.cache.v0"
UNCOMPRESSED = "containerd.io/uncompressed"
CREATED_AT = "buildkit/createdat"

_OCI_LAYERS = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "uncompressed": "application/vnd.oci.image.layer.v1.tar",
}
_DOCKER_LAYERS = {
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "uncompressed": "application/vnd.docker.image.rootfs.diff.tar",
}
#: a manifest or config larger than this is refused, as BuildKit refuses it
MAX_DOCUMENT = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class InvalidCacheError(UserError):
    """A cache's manifest or config is not what BuildKit writes."""


@dataclass(frozen=True)
class RemoteLayer:
    """A layer blob as a remote cache describes it."""

    digest: str
    diff_id: str
    size: int
    media_type: str
    #: nanoseconds since the epoch, as Go's time keeps them
    created: int = 0

    @property
    def compression(self) -> str:
        media = self.media_type
        return "gzip" if "gzip" in media else "zstd" if "zstd" in media else "uncompressed"


@dataclass
class ExportRecord:
    """One record to export: a key, what it finds, and the records of its inputs.

    :param inputs: per input of the op, the ``(selector, linked record's name)`` pairs.
    :param chain: the result's layers bottom first; ``None`` for a record without a result.
    :param ident: what links name the record by, when its digest is not enough: BuildKit's
        records of one op on other inputs share a digest.
    """

    digest: str
    inputs: list[list[tuple[str, str]]] = field(default_factory=list)
    chain: tuple[RemoteLayer, ...] | None = None
    #: nanoseconds since the epoch
    created: int = 0
    ident: str = ""

    @property
    def name(self) -> str:
        """What links to this record name it by."""
        return self.ident or self.digest


@dataclass
class ImportedRecord:
    """A record read from a cache: the results its key finds (each a chain of layers)."""

    digest: str
    chains: list[tuple[RemoteLayer, ...]] = field(default_factory=list)
    inputs: list[list[tuple[str, str]]] = field(default_factory=list)


class ImportedRecords(dict[str, ImportedRecord]):
    """A cache's records by digest (one record for the results of all those with its
    digest), and all of them as BuildKit's importer walks them (:attr:`graph`)."""

    def __init__(self, graph: LinkGraph | None = None) -> None:
        super().__init__()
        self.graph = LinkGraph() if graph is None else graph


@dataclass(frozen=True)
class CacheManifest:
    """A manifest as an importer reads it.

    :param config: the cache config's digest (``None``: not a cache; an image, maybe with
        inline cache, or an index of images).
    :param layers: the layer descriptors it lists, by digest.
    :param images: for an index of images, each image manifest's digest and platform.
    :param image_config: for an image manifest, its config's digest.
    """

    media_type: str
    config: str | None = None
    layers: Mapping[str, RemoteLayer] = field(default_factory=dict)
    ordered: Sequence[RemoteLayer] = ()
    images: Sequence[tuple[str, str]] = ()
    image_config: str | None = None


def go_time(nanos: int) -> str:
    """A time (nanoseconds since the epoch) as Go's ``time.Time`` marshals it: RFC 3339 in
    UTC, the fraction without trailing zeros."""
    whole, frac = divmod(int(nanos), 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str) -> int:
    """The inverse of :func:`go_time` (any RFC 3339 time, ``Z`` or an offset); 0 if unreadable."""
    from datetime import datetime

    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return 0
    head, frac, zone = match.groups()
    try:
        base = datetime.fromisoformat(head + ("+00:00" if zone in ("Z", "z") else zone))
    except ValueError:
        return 0
    nanos = int((frac or "").ljust(9, "0")[:9] or 0)
    return int(base.timestamp()) * 1_000_000_000 + nanos


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")


def _dumps(value: Any) -> bytes:
    """JSON as Go's encoder writes it: no spaces, ``<``, ``>`` and ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode()


def _layer_table(
    records: Sequence[ExportRecord],
) -> tuple[list[tuple[RemoteLayer, int]], dict[int, dict[int, int]]]:
    """The distinct (blob, parent) layers of every record's chain, sorted as BuildKit sorts
    them (by blob, then parent), and each record's result as an index into them."""
    ids: dict[tuple[str, ...], int] = {}
    entries: list[tuple[RemoteLayer, int]] = []
    tops: dict[int, dict[int, int]] = {}
    for n, record in enumerate(records):
        if not record.chain:
            continue
        parent = -1
        path: tuple[str, ...] = ()
        for layer in record.chain:
            path = (*path, layer.digest)
            if path not in ids:
                ids[path] = len(entries)
                entries.append((layer, parent))
            parent = ids[path]
        tops[n] = {0: parent}
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0].digest, entries[i][1]))
    # Parents are renumbered after sorting; BuildKit sorts by the old parent index.
    new = {old: position for position, old in enumerate(order)}
    table = [
        (entries[old][0], new[entries[old][1]] if entries[old][1] != -1 else -1) for old in order
    ]
    remapped = {n: {0: new[top[0]]} for n, top in tops.items()}
    return table, remapped


def encode_config(
    records: Sequence[ExportRecord], *, annotate: bool = False
) -> tuple[bytes, list[RemoteLayer]]:
    """The cache config for ``records``, and its layers in config order (each blob a
    manifest lists, in that order). ``annotate`` puts each layer's descriptor in the config
    (for caches without a manifest: s3, azblob, gha)."""
    records = sorted(records, key=_record_sort_key(records))
    table, tops = _layer_table(records)
    position = {r.name: n for n, r in enumerate(records)}
    layers_json = []
    for layer, parent in table:
        entry: dict[str, Any] = {"blob": layer.digest}
        if parent != 0:
            entry["parent"] = parent  # Go's omitempty drops a parent index of 0
        if annotate:
            entry["annotations"] = {
                "mediaType": layer.media_type,
                "diffID": layer.diff_id,
                "size": layer.size,
                "createdAt": go_time(layer.created),
            }
        layers_json.append(entry)
    records_json = []
    for n, record in enumerate(records):
        entry = {}
        if n in tops:
            entry["layers"] = [{"layer": tops[n][0], "createdAt": go_time(record.created)}]
        entry["digest"] = record.digest
        inputs = [
            sorted(
                ({"selector": sel, "link": position[link]} for sel, link in links),
                key=lambda i: (i["link"], i["selector"]),
            )
            for links in record.inputs
        ]
        for links in inputs:
            for link in links:
                if not link["selector"]:
                    del link["selector"]  # omitempty
        if inputs:
            entry["inputs"] = inputs
        records_json.append(entry)
    config: dict[str, Any] = {}
    if layers_json:
        config["layers"] = layers_json
    if records_json:
        config["records"] = records_json
    return _dumps(config), [layer for layer, _ in table]


def _record_sort_key(records: Sequence[ExportRecord]) -> Any:
    """BuildKit's record order: by digest, then by inputs (their selectors and the digests
    they link to), then by name (records of one digest on other inputs)."""
    digests = {r.name: r.digest for r in records}

    def key(record: ExportRecord) -> tuple[Any, ...]:
        inputs = tuple(
            (len(links), tuple(sorted((sel, digests.get(link, link)) for sel, link in links)))
            for links in record.inputs
        )
        return (record.digest, len(record.inputs), inputs, record.name)

    return key


def _descriptor(layer: RemoteLayer, oci: bool) -> dict[str, Any]:
    media = (_OCI_LAYERS if oci else _DOCKER_LAYERS).get(layer.compression, layer.media_type)
    return {
        "mediaType": media,
        "digest": layer.digest,
        "size": layer.size,
        "annotations": {CREATED_AT: go_time(layer.created), UNCOMPRESSED: layer.diff_id},
    }


def encode_manifest(
    config: bytes, layers: Sequence[RemoteLayer], *, oci: bool = True, image_manifest: bool = False
) -> tuple[bytes, str, str]:
    """The manifest that names the cache config and its layer blobs: a manifest list (OCI
    index with ``oci``) or, with ``image_manifest``, an OCI image manifest whose config is the
    cache config. Returns its bytes, its media type and the config's digest."""
    import hashlib

    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    config_desc = {"mediaType": CACHE_CONFIG, "digest": config_digest, "size": len(config)}
    if image_manifest:
        if not oci:
            raise UserError("image-manifest=true needs oci-mediatypes=true")
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": [_descriptor(layer, True) for layer in layers],
        }
        return _dumps(doc), OCI_MANIFEST, config_digest
    media_type = OCI_INDEX if oci else DOCKER_LIST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [*(_descriptor(layer, oci) for layer in layers), config_desc],
    }
    return _dumps(doc), media_type, config_digest


def _remote_layer(desc: Mapping[str, Any], what: str) -> RemoteLayer:
    annotations = desc.get("annotations") or {}
    if not _DIGEST.fullmatch(str(desc.get("digest", ""))):
        raise InvalidCacheError(f"{what}: {desc.get('digest')!r} is not a sha256 digest")
    try:
        return RemoteLayer(
            digest=str(desc["digest"]),
            diff_id=str(annotations.get(UNCOMPRESSED, "")),
            size=int(desc.get("size", 0)),
            media_type=str(desc.get("mediaType", "")),
            created=parse_go_time(str(annotations.get(CREATED_AT, ""))),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidCacheError(f"{what}: a layer descriptor lacks its digest or size") from None


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT:
        raise InvalidCacheError(f"{what}: {len(data)} bytes is larger than 1 MiB; refused")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InvalidCacheError(f"{what}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidCacheError(f"{what}: not a JSON object")
    return doc


def _parse_manifest(data: bytes, what: str) -> CacheManifest:
    """Read a cache's manifest: a cache (index or image manifest naming a cache config), an
    image manifest, or an index of images."""
    doc = _load(data, what)
    media = str(doc.get("mediaType", ""))
    if "manifests" in doc:
        entries = doc.get("manifests") or []
        config = next((m for m in entries if m.get("mediaType") == CACHE_CONFIG), None)
        if config is not None:
            layers = [_remote_layer(m, what) for m in entries if m is not config]
            return CacheManifest(
                media or OCI_INDEX,
                str(config["digest"]),
                {layer.digest: layer for layer in layers},
                layers,
            )
        images = [
            (str(m["digest"]), _platform(m.get("platform") or {})) for m in entries if "digest" in m
        ]
        return CacheManifest(media or OCI_INDEX, images=images)
    cfg = doc.get("config") or {}
    layers = [_remote_layer(m, what) for m in doc.get("layers") or []]
    by_digest = {layer.digest: layer for layer in layers}
    if cfg.get("mediaType") == CACHE_CONFIG:
        return CacheManifest(media or OCI_MANIFEST, str(cfg["digest"]), by_digest, layers)
    if "digest" not in cfg:
        raise InvalidCacheError(f"{what}: neither a cache nor an image manifest")
    return CacheManifest(
        media or OCI_MANIFEST, layers=by_digest, ordered=layers, image_config=str(cfg["digest"])
    )


def parse_manifest(data: bytes, what: str) -> CacheManifest:
    """Read a cache's manifest: a cache (an index or image manifest naming a cache config), an
    image manifest, or an index of images. Anything else is an :class:`InvalidCacheError`."""
    found: CacheManifest = _checked(_parse_manifest, data, what)
    return found


def _checked(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, a document of the wrong shape named as the cache's fault."""
    try:
        return fn(*args)
    except InvalidCacheError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as err:
        raise InvalidCacheError(f"{args[-1]}: not a cache BuildKit writes ({err!r})") from None


def _platform(platform: Mapping[str, Any]) -> str:
    return str(
        Platform(
            str(platform.get("os", "")),
            str(platform.get("architecture", "")),
            str(platform.get("variant", "")),
        )
    )


def _records(raw: Any, layer_of: Any, chain_of: Any, what: str) -> ImportedRecords:
    if not isinstance(raw, list):
        raise InvalidCacheError(f"{what}: records is not a list")
    records: list[ImportedRecord] = []
    linked: list[list[list[tuple[str, int]]]] = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise InvalidCacheError(f"{what}: record {n} has no digest")
        chains = [layer_of(int(r.get("layer", 0))) for r in item.get("layers") or []]
        chains += [chain_of(list(c.get("layers") or [])) for c in item.get("chains") or []]
        records.append(ImportedRecord(item["digest"], [c for c in chains if c]))
    for record, item in zip(records, raw, strict=True):
        indexes = []
        for links in item.get("inputs") or []:
            found = []
            for link in links or []:
                index = int(link.get("link", 0))
                if not 0 <= index < len(records):
                    raise InvalidCacheError(f"{what}: a record links to record {index}")
                found.append((str(link.get("selector", "")), index))
            record.inputs.append([(sel, records[index].digest) for sel, index in found])
            indexes.append(found)
        linked.append(indexes)
    by_digest = ImportedRecords()
    by_digest.graph.add(
        [(r.digest, list(r.chains), inputs) for r, inputs in zip(records, linked, strict=True)]
    )
    for record in records:
        known = by_digest.get(record.digest)
        if known is None:
            by_digest[record.digest] = record
        else:
            known.chains.extend(record.chains)
    return by_digest


def decode_config(
    data: bytes, descriptors: Mapping[str, RemoteLayer], what: str
) -> ImportedRecords:
    """The records of a cache config, each result as a chain of described layers. A layer
    the manifest does not describe (or without its diff id) leaves the results on it out."""
    result: ImportedRecords = _checked(_decode_config, data, descriptors, what)
    return result


def _decode_config(
    data: bytes, descriptors: Mapping[str, RemoteLayer], what: str
) -> ImportedRecords:
    """The records of a cache config, each result as a chain of described layers. A layer
    the manifest does not describe makes the results on it unusable (left out)."""
    doc = _load(data, what)
    layers = doc.get("layers") or []
    if not isinstance(layers, list):
        raise InvalidCacheError(f"{what}: layers is not a list")
    for entry in layers:
        if not _DIGEST.fullmatch(str(entry.get("blob", ""))):
            raise InvalidCacheError(f"{what}: layer blob {entry.get('blob')!r} is not sha256")

    def described(entry: Mapping[str, Any]) -> RemoteLayer | None:
        blob = str(entry.get("blob", ""))
        if not _DIGEST.fullmatch(blob):
            raise InvalidCacheError(f"{what}: layer blob {blob!r} is not a sha256 digest")
        if blob in descriptors:
            found = descriptors[blob]
            return found if found.diff_id else None
        note = entry.get("annotations")
        if isinstance(note, dict) and note.get("mediaType") and note.get("diffID"):
            return RemoteLayer(
                blob,
                str(note.get("diffID", "")),
                int(note.get("size", 0)),
                str(note["mediaType"]),
                parse_go_time(str(note.get("createdAt", ""))),
            )
        return None

    def layer_of(index: int) -> tuple[RemoteLayer, ...]:
        chain: list[RemoteLayer] = []
        seen: set[int] = set()
        while index != -1:
            if not 0 <= index < len(layers) or index in seen:
                raise InvalidCacheError(f"{what}: layer {index} is not in the config")
            seen.add(index)
            layer = described(layers[index])
            if layer is None:
                return ()
            chain.append(layer)
            index = int(layers[index].get("parent", 0))
        return tuple(reversed(chain))

    def chain_of(indexes: list[int]) -> tuple[RemoteLayer, ...]:
        found = []
        for index in indexes:
            if not 0 <= index < len(layers):
                raise InvalidCacheError(f"{what}: layer {index} is not in the config")
            layer = described(layers[index])
            if layer is None:
                return ()
            found.append(layer)
        return tuple(found)

    return _records(doc.get("records") or [], layer_of, chain_of, what)


def encode_inline(records: Sequence[ExportRecord], image_layers: Sequence[str]) -> bytes | None:
    """The ``moby.buildkit.cache.v0`` value for an image whose layer blobs are
    ``image_layers``: records whose result is a prefix of the image name its top layer's
    index; others list their layers' indexes (a chain); results with layers the image lacks
    are dropped. ``None`` when no result matches the image's layers."""
    index = {digest: n for n, digest in enumerate(image_layers)}
    kept: list[dict[str, Any]] = []
    records = sorted(records, key=_record_sort_key(records))
    position = {r.name: n for n, r in enumerate(records)}
    matched = False
    for record in records:
        entry: dict[str, Any] = {}
        if record.chain:
            blobs = [layer.digest for layer in record.chain]
            if blobs == list(image_layers[: len(blobs)]):
                entry["layers"] = [{"layer": len(blobs) - 1, "createdAt": go_time(record.created)}]
                matched = True
            elif all(b in index for b in blobs):
                entry["chains"] = [
                    {"layers": [index[b] for b in blobs], "createdAt": go_time(record.created)}
                ]
                matched = True
        entry["digest"] = record.digest
        inputs = [
            [
                {"selector": sel, "link": position[link]} if sel else {"link": position[link]}
                for sel, link in sorted(links, key=lambda x: (position[x[1]], x[0]))
            ]
            for links in record.inputs
        ]
        if inputs:
            entry["inputs"] = inputs
        kept.append(entry)
    if not matched:
        return None
    return _dumps(kept)


def decode_inline(
    config: Mapping[str, Any], layers: Sequence[RemoteLayer], what: str
) -> ImportedRecords:
    """The records an image config carries (``moby.buildkit.cache.v0``), with the image's
    layers (diff ids from its rootfs, creation times from its history) as their results."""
    result: ImportedRecords = _checked(_decode_inline, config, layers, what)
    return result


def _decode_inline(
    config: Mapping[str, Any], layers: Sequence[RemoteLayer], what: str
) -> ImportedRecords:
    """The records an image config carries (``moby.buildkit.cache.v0``), with the image's
    layers (diff ids from its rootfs, creation times from its history) as their results."""
    raw = config.get(INLINE_KEY)
    if not raw:
        return ImportedRecords()
    try:
        data = base64.b64decode(str(raw), validate=True)
        items = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidCacheError(f"{what}: {INLINE_KEY} is not base64 JSON") from None
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(layers):
        return ImportedRecords()  # as BuildKit's: config and manifest disagree, no cache
    history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    described = []
    for n, layer in enumerate(layers):
        created = parse_go_time(str(history[n].get("created", ""))) if n < len(history) else 0
        described.append(
            RemoteLayer(layer.digest, str(diff_ids[n]), layer.size, layer.media_type, created)
        )

    def layer_of(index: int) -> tuple[RemoteLayer, ...]:
        if not 0 <= index < len(described):
            raise InvalidCacheError(f"{what}: inline cache names layer {index}")
        return tuple(described[: index + 1])

    def chain_of(indexes: list[int]) -> tuple[RemoteLayer, ...]:
        if not all(0 <= i < len(described) for i in indexes):
            raise InvalidCacheError(f"{what}: inline cache names a layer the image lacks")
        return tuple(described[i] for i in indexes)

    return _records(items, layer_of, chain_of, what)
