"""Assembling an image from a result: layer blobs, config, manifest, descriptors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llbkit.core.errors import ConfigError
from llbkit.core.known_platforms import parse_platform
from llbkit.core.llb.dot import go_quote
from llbkit.core.plugins import (
    BuildResult,
    Compression,
    LayerDescriptor,
    LayerOptions,
    Platform,
    Result,
)
from llbkit.core.plugins.compression import compression_level
from llbkit.core.plugins.exporter import InlineCache

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    (True, "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    (True, "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    (True, "uncompressed"): "application/vnd.oci.image.layer.v1.tar",
    (False, "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    (False, "uncompressed"): "application/vnd.docker.image.rootfs.diff.tar",
}


#: the annotations that make BuildKit turn OCI media types on
ANNOTATED_DESCRIPTORS = ("index", "index-descriptor", "manifest-descriptor")
#: ``annotation[-index|-manifest|-index-descriptor|-manifest-descriptor][[platform]].key``
ANNOTATION_KEY = re.compile(
    r"^annotation(?:-(index|manifest|index-descriptor|manifest-descriptor))?"
    r"(?:\[([^\]]+)\])?\.(.+)$"
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _bool(name: str, attrs: Mapping[str, str], default: bool) -> bool:
    """Go's ``strconv.ParseBool``, an empty value true (BuildKit's ``parseBoolWithDefault``)."""
    if name not in attrs:
        return default
    value = attrs[name]
    if value in ("", "1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ConfigError(
        f"non-bool value specified for {name}: strconv.ParseBool: parsing {go_quote(value)}: "
        "invalid syntax"
    )


@dataclass
class CommitOptions:
    """The image-commit keys shared by ``oci``, ``docker`` and ``image``."""

    names: list[str] = field(default_factory=list)
    compression: Compression = "gzip"
    level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool = True
    epoch: int | None = None
    rewrite_timestamp: bool = False
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, attrs: Mapping[str, str], *, oci_default: bool) -> CommitOptions:
        opts = cls(oci_mediatypes=_bool("oci-mediatypes", attrs, oci_default))
        opts.names = [n.strip() for n in attrs.get("name", "").split(",") if n.strip()]
        compression = attrs.get("compression", "gzip") or "gzip"
        if compression not in ("gzip", "zstd", "uncompressed"):
            raise ConfigError(
                f"unsupported compression type {compression} (exporter option compression: "
                "gzip, zstd or uncompressed)"
            )
        opts.compression = compression  # type: ignore[assignment]  # checked just above
        opts.level = compression_level(compression, attrs.get("compression-level", ""), "exporter")
        opts.force_compression = _bool("force-compression", attrs, False)
        opts.rewrite_timestamp = _bool("rewrite-timestamp", attrs, False)
        if attrs.get("source-date-epoch"):
            try:
                opts.epoch = int(attrs["source-date-epoch"])
            except ValueError:
                raise ConfigError("exporter option source-date-epoch must be seconds") from None
        for key, value in attrs.items():
            match = ANNOTATION_KEY.match(key)
            if match is None:
                continue
            kind, platform, name = match.groups()
            if platform:
                # Read as BuildKit reads it, so linux/x86_64 names the linux/amd64 image.
                try:
                    parsed = parse_platform(platform)
                except ValueError as err:
                    raise ConfigError(f"{err}: invalid argument") from None
                platform = "/".join(part for part in parsed if part)
            where = f"{kind or 'manifest'}[{platform}]" if platform else kind or "manifest"
            opts.annotations.setdefault(where, {})[name] = value
        if any(k.split("[")[0] in opts.annotations for k in ANNOTATED_DESCRIPTORS):
            opts.oci_mediatypes = True  # as BuildKit: docker's types carry no such annotations
        return opts

    def annotations_for(self, kind: str, platform: str | None = None) -> dict[str, str]:
        """The annotations of ``kind``, with those qualified for ``platform`` over them."""
        found = dict(self.annotations.get(kind, {}))
        if platform:
            found.update(self.annotations.get(f"{kind}[{platform}]", {}))
        return found


@dataclass(frozen=True)
class LayerBlob:
    """A layer's blob, asked of the result only when its bytes are needed: a layer imported
    from a cache is downloaded then, and a push that mounts or skips it never needs them."""

    ref: Result
    digest: str

    async def path(self) -> Path:
        return await self.ref.blob_path(self.digest)


BlobSource = Path | bytes | LayerBlob


async def blob_file(source: BlobSource) -> Path | bytes:
    """The bytes or file behind ``source``."""
    return await source.path() if isinstance(source, LayerBlob) else source


@dataclass
class Image:
    """An assembled single-platform image."""

    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layers: list[tuple[str, int, BlobSource]]
    media_type: str

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": len(self.manifest),
        }
        if annotations:
            found["annotations"] = dict(annotations)
        return found

    def blobs(self) -> list[tuple[str, BlobSource]]:
        """Every blob the image needs: config, manifest, layers."""
        return [
            (self.config_digest, self.config),
            (self.manifest_digest, self.manifest),
            *((d, src) for d, _, src in self.layers),
        ]


async def _layers(
    ref: Result, opts: CommitOptions, epoch: int | None
) -> list[tuple[LayerDescriptor, LayerBlob]]:
    """Each layer's descriptor and blob, bottom first."""
    options = LayerOptions(
        compression=opts.compression,
        level=opts.level,
        epoch=epoch if opts.rewrite_timestamp else None,
        force=opts.force_compression,
    )
    layers = await ref.layers(options)
    return [(d, LayerBlob(ref, d.digest)) for d in layers]


def _history(config: dict[str, Any], descriptions: Sequence[str], created: str) -> None:
    """Make the history describe exactly one entry per layer (``descriptions``, what made
    each), as BuildKit's exporter does: a layer no entry accounts for gets one naming it."""
    count = len(descriptions)
    history = list(config.get("history") or [])
    layered = [h for h in history if not h.get("empty_layer")]
    for entry in history[: max(0, len(layered) - count)]:
        entry["empty_layer"] = True
    recorded = len([h for h in history if not h.get("empty_layer")])
    for n in range(recorded, count):
        entry = {"created": created, "created_by": descriptions[n]}
        if not entry["created_by"]:
            del entry["created_by"]
        history.append({**entry, "comment": "buildkit.exporter.image.v0"})
    config["history"] = history


def _epoch(result: BuildResult, opts: CommitOptions) -> int | None:
    """``source-date-epoch=``, else the build's ``SOURCE_DATE_EPOCH`` (from the frontend)."""
    if opts.epoch is not None:
        return opts.epoch
    raw = result.metadata.get("llbkit.source-date-epoch")
    return int(raw) if raw else None


async def assemble(
    result: BuildResult,
    opts: CommitOptions,
    *,
    epoch: int | None = None,
    moment: int | None = None,
    inline_cache: InlineCache | None = None,
    platform: str | None = None,
) -> Image:
    """The image for a single-platform result (``result.single``).

    ``epoch`` is the source date epoch (see :func:`_epoch`), ``moment`` the image's creation
    time in seconds; :func:`publish` computes both once for every platform and the layout.
    ``platform``: the image's platform within a multi-platform export, whose annotations for
    that platform it takes (a single-platform export's are left out, as BuildKit's).
    """
    ref = result.single
    if ref is None and result.refs:
        raise ConfigError("this exporter writes single-platform results only")
    raw_config = result.metadata.get("containerimage.config")
    config: dict[str, Any] = (
        json.loads(raw_config)
        if raw_config
        else {
            "architecture": "amd64",
            "os": "linux",
            # BuildKit's config for a result without one: a default PATH, the root as the
            # working directory
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "WorkingDir": "/",
            },
        }
    )
    if epoch is None:
        epoch = _epoch(result, opts)
    if moment is None:
        moment = epoch if epoch is not None else int(time.time())
    created = created_text(moment)
    # No result is scratch: an image of its config and no layers.
    layers = await _layers(ref, opts, epoch) if ref is not None else []
    config["rootfs"] = {"type": "layers", "diff_ids": [d.diff_id for d, _ in layers]}
    config["created"] = created
    if inline_cache is not None and ref is not None:
        records = await inline_cache(next(iter(result.refs)), config["rootfs"]["diff_ids"])
        if records is not None:
            # Go marshals the records' bytes as base64, and BuildKit reads them back so.
            config["moby.buildkit.cache.v0"] = base64.b64encode(records).decode()
    _history(config, [d.description for d, _ in layers], created)
    if epoch is not None:
        for entry in config["history"]:
            entry["created"] = created
    config_bytes = config_json(config)
    # zstd layers under OCI media types (BuildKit v0.11 names them with a type docker's
    # manifest schema does not have); layers reused as gzip keep docker's when asked for.
    oci = opts.oci_mediatypes or any(d.compression == "zstd" for d, _ in layers)
    manifest: dict[str, Any] = {
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "schemaVersion": 2,
        "config": {
            "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
            "digest": _digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            # What each blob is (a layer says its own compression), in the manifest's flavour.
            {"mediaType": LAYER_TYPES[oci, d.compression], "digest": d.digest, "size": d.size}
            for d, _ in layers
        ]
        or None,
    }
    if opts.annotations_for("manifest", platform):
        manifest["annotations"] = opts.annotations_for("manifest", platform)
    manifest_bytes = go_indented(manifest)
    return Image(
        manifest_bytes,
        _digest(manifest_bytes),
        config_bytes,
        _digest(config_bytes),
        [(d.digest, d.size, blob) for d, blob in layers],
        manifest["mediaType"],
    )


def config_json(config: dict[str, Any]) -> bytes:
    """The config's bytes as BuildKit's exporter writes them (so digests agree): top-level keys
    sorted (it patches the config as a map), no layers as ``null``, and Go's string escapes
    (UTF-8 kept, ``<``, ``>`` and ``&`` as ``\\u003c``…)."""
    found = dict(sorted(config.items()))
    rootfs = found.get("rootfs")
    if isinstance(rootfs, dict) and not rootfs.get("diff_ids"):
        found["rootfs"] = {**rootfs, "diff_ids": None}
    return _go_escaped(json.dumps(found, separators=(",", ":"), ensure_ascii=False))


def go_indented(document: dict[str, Any]) -> bytes:
    """A manifest or index as BuildKit writes it: Go's ``json.MarshalIndent`` with two spaces
    (keys in the order given: mediaType first, as its struct has it)."""
    return _go_escaped(json.dumps(document, indent=2, ensure_ascii=False))


def _go_escaped(text: str) -> bytes:
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode()


#: what Go's encoding/json escapes in strings besides JSON's own (these appear only in strings)
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _config_platform(config: dict[str, Any]) -> str:
    """``os/architecture[/variant]`` of an image config (for a result without a filesystem)."""
    parts = [config.get("os", "linux"), config.get("architecture", "amd64")]
    return "/".join(parts + ([config["variant"]] if config.get("variant") else []))


def created_text(moment: int) -> str:
    """``moment`` (seconds since the epoch) as the image config's ``created`` writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def response(
    published: Any, names: list[str], opts: CommitOptions, *, dated: bool = False
) -> dict[str, str]:
    """The exporter response (``--metadata-file``) as BuildKit writes it; ``dated``: its
    descriptor carries the image's creation time, as BuildKit's oci and docker exporters give
    it (buildctl copies it into the index.json of a ``tar=false`` output)."""
    first = published.images[0][1]
    annotations = {"org.opencontainers.image.created": created_text(published.created)}
    annotations = annotations if dated else {}
    single = not published.is_index
    annotations |= opts.annotations_for("manifest-descriptor" if single else "index-descriptor")
    descriptor = published.descriptor(dict(sorted(annotations.items())) or None)
    if single:
        # One image: its manifest's descriptor names its platform, as BuildKit's does.
        descriptor["platform"] = _platform_of(published.images[0][0])
    found = {"containerimage.digest": published.digest}
    if single:  # an index has no one config: BuildKit names none
        found["containerimage.config.digest"] = first.config_digest
    found["containerimage.descriptor"] = base64.b64encode(json.dumps(descriptor).encode()).decode()
    if names:
        found["image.name"] = ",".join(names)
    return found


@dataclass
class Published:
    """What an export writes or pushes: the top descriptor (a manifest, or an index of one
    manifest per platform), its bytes, and every blob."""

    media_type: str
    digest: str
    data: bytes
    images: list[tuple[str, Image]]
    #: where pulled layers came from, for cross-repository mounts when pushing
    sources: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: the creation time (seconds) every config's ``created`` holds, for the layout to reuse
    created: int = 0

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if annotations:
            found["annotations"] = dict(annotations)
        return found

    @property
    def is_index(self) -> bool:
        """An index over the platforms' manifests (a build's result by platform, even for
        one), not one image's manifest."""
        return self.media_type in (OCI_INDEX, DOCKER_LIST)

    def blobs(self) -> list[tuple[str, BlobSource]]:
        found: list[tuple[str, BlobSource]] = []
        for _, image in self.images:
            found += image.blobs()
        if self.is_index:
            found.append((self.digest, self.data))
        return found


def _platform_of(key: str) -> dict[str, str]:
    platform = Platform.parse(key)
    found = {"architecture": platform.architecture, "os": platform.os}  # Go's field order
    if platform.variant:
        found["variant"] = platform.variant
    return found


async def publish(
    result: BuildResult, opts: CommitOptions, inline_cache: InlineCache | None = None
) -> Published:
    """One image, or an index over one image per platform (``refs.platforms`` order)."""
    # One creation time for every platform's config and for the layout written around them.
    epoch = _epoch(result, opts)
    moment = epoch if epoch is not None else int(time.time())
    order = result.platforms
    if not result.is_map:
        if opts.annotations_for("index") or opts.annotations_for("index-descriptor"):
            raise ConfigError("index annotations not supported for single platform export")
        image = await assemble(result, opts, epoch=epoch, moment=moment, inline_cache=inline_cache)
        key = next(iter(result.refs), _config_platform(json.loads(image.config)))
        return Published(
            image.media_type,
            image.manifest_digest,
            image.manifest,
            [(key, image)],
            _sources(result, [image]),
            moment,
        )
    # Every platform, one with no result (scratch) an image of no layers.
    images = []
    for key in order:
        metadata = {k: v for k, v in result.metadata.items() if "/" not in k}
        config = result.metadata.get(f"containerimage.config/{key}")
        if config is not None:
            metadata["containerimage.config"] = config
        ref = result.refs.get(key)
        single = BuildResult({key: ref} if ref is not None else {}, metadata)
        image = await assemble(
            single, opts, epoch=epoch, moment=moment, inline_cache=inline_cache, platform=key
        )
        images.append((key, image))
    index: dict[str, Any] = {
        "mediaType": OCI_INDEX if opts.oci_mediatypes else DOCKER_LIST,
        "schemaVersion": 2,
        "manifests": [
            {
                **image.descriptor(opts.annotations_for("manifest-descriptor", key) or None),
                "platform": _platform_of(key),
            }
            for key, image in images
        ],
    }
    if opts.annotations_for("index"):
        index["annotations"] = opts.annotations_for("index")
    data = go_indented(index)
    return Published(
        index["mediaType"],
        _digest(data),
        data,
        images,
        _sources(result, [image for _, image in images]),
        moment,
    )


def _sources(result: BuildResult, images: list[Image]) -> dict[str, list[tuple[str, str]]]:
    """Where each pulled layer came from: pushes to the same registry mount it from there."""
    found: dict[str, list[tuple[str, str]]] = {}
    for ref in result.refs.values():
        for image in images:
            for digest, _, _ in image.layers:
                if digest in found:
                    continue
                pulled = ref.blob_sources(digest)
                if pulled:
                    found[digest] = [(s.registry, s.repository) for s in pulled]
    return found
