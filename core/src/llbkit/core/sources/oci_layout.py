"""``oci-layout://<store>@<digest>`` sources: an image from an OCI layout the client exposes."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from llbkit.core.errors import UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    image_key,
    parse_int,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.source import FetchedLayer

_KNOWN = ("oci.session", "oci.store", "oci.layerlimit")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class OCILayoutJob(ParsedSource):
    identifier: str
    store: str
    digest: str
    platform: Platform | None
    session: str = ""
    layer_limit: int | None = None
    _manifest: dict[str, Any] = field(default_factory=dict, compare=False)

    async def _read_bytes(self, client: ClientIO, digest: str) -> bytes:
        """A small blob (an index, a manifest, a config), read to BuildKit's bound for them
        (4 MiB) and checked against its digest."""
        data = bytearray()
        async with client.layout_blob(self.store, _digest(self.identifier, digest)) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > MAX_READ:
                    raise UserError(f"{self.identifier}: {digest} is more than {MAX_READ} bytes")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{self.identifier}: blob {digest} does not match its digest")
        return bytes(data)

    async def _read(self, client: ClientIO, digest: str) -> dict[str, Any]:
        """An index or manifest, read and checked (:meth:`_read_bytes`), as a JSON object."""
        data = await self._read_bytes(client, digest)
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError):
            decoded = None
        if not isinstance(decoded, dict):
            raise UserError(f"{self.identifier}: {digest} is not a JSON object")
        return decoded

    async def _resolve(self, client: ClientIO) -> dict[str, Any]:
        """The manifest for the build's platform (through an index if the digest names one)."""
        if "manifest" in self._manifest:
            return self._manifest
        from llbkit.core.plugins.context import Platform
        from llbkit.core.registry.client import platform_matches

        digest = self.digest
        manifest = await self._read(client, digest)
        if "manifests" in manifest:
            platform = self.platform or Platform()
            listed = manifest["manifests"]
            if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
                raise UserError(f"{self.identifier}: {digest}: manifests is not a list of objects")
            chosen = [m for m in listed if platform_matches(m, platform)]
            if not chosen:
                raise UserError(f"{self.identifier}: no image for {platform} in the index")
            digest = _digest(self.identifier, chosen[0].get("digest"))
            manifest = await self._read(client, digest)
        layers = manifest.get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            raise UserError(f"{self.identifier}: {digest}: layers is not a list of objects")
        self._manifest.update(manifest=manifest, digest=digest)
        return self._manifest

    async def image_config(self, client: ClientIO) -> bytes:
        """The config of the image for the build's platform, as its manifest names it."""
        resolved = await self._resolve(client)
        config = resolved["manifest"].get("config")
        if not isinstance(config, dict):
            raise UserError(f"{self.identifier}: {resolved['digest']}: the manifest has no config")
        return await self._read_bytes(client, _digest(self.identifier, config.get("digest")))

    async def cache_key(self, client: ClientIO) -> str:
        """As for registry images: the manifest digest, the platform, the layer limit."""
        from llbkit.core.plugins.context import Platform

        resolved = await self._resolve(client)
        return image_key(resolved["digest"], self.platform or Platform(), self.layer_limit)

    async def _layer(self, client: ClientIO, digest: str, spool: IO[bytes]) -> None:
        """Layer ``digest`` from the client into ``spool`` (verified), rewound."""
        check = hashlib.sha256()
        async with client.layout_blob(self.store, digest) as chunks:
            async for chunk in chunks:
                spool.write(chunk)
                check.update(chunk)
        if "sha256:" + check.hexdigest() != digest:
            raise UserError(f"{self.identifier}: layer {digest} does not match its digest")
        spool.seek(0)

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        """Read each layer from the client (verified), then apply them in order."""
        from llbkit.core.snapshot.untar import apply_tar

        resolved = await self._resolve(client)
        for layer in resolved["manifest"].get("layers", [])[: self.layer_limit]:
            digest = _digest(self.identifier, layer.get("digest"))
            with tempfile.TemporaryFile() as spool:
                await self._layer(client, digest, spool)
                progress.status(f"extracting {digest}")
                await anyio.to_thread.run_sync(
                    functools.partial(apply_tar, spool, str(dest), what=f"layer {digest}")
                )
                progress.status(f"extracting {digest}", done=True)

    async def fetch_layers(
        self, client: ClientIO, stage: Path, progress: ProgressSink, layer_format: str
    ) -> list[FetchedLayer]:
        """Each layer (verified) into a directory of its own under ``stage``, its blob kept:
        an image built on it exports the layout's own layers, as BuildKit's does."""
        from llbkit.core.plugins.source import FetchedLayer
        from llbkit.core.snapshot.untar import unpack_layer

        resolved = await self._resolve(client)
        config = json.loads(await self.image_config(client))
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = (rootfs.get("diff_ids") if isinstance(rootfs, dict) else None) or []
        every = resolved["manifest"].get("layers", [])
        fetched = []
        for n, layer in enumerate(every[: self.layer_limit]):
            digest = _digest(self.identifier, layer.get("digest"))
            blob, tree = stage / f"blob-{n}", stage / f"layer-{n}"
            tree.mkdir()
            tree.chmod(0o755)
            with open(blob, "w+b") as spool:
                await self._layer(client, digest, spool)
                progress.status(f"extracting {digest}")
                await anyio.to_thread.run_sync(
                    functools.partial(
                        unpack_layer, spool, str(tree), layer_format, what=f"layer {digest}"
                    )
                )
                progress.status(f"extracting {digest}", done=True)
            diff_id = diff_ids[n] if len(diff_ids) == len(every) else ""
            fetched.append(
                FetchedLayer(
                    tree=tree,
                    blob=blob,
                    digest=digest,
                    size=blob.stat().st_size,
                    media_type=str(layer.get("mediaType") or ""),
                    diff_id=diff_id if isinstance(diff_id, str) else "",
                    description=f"pulled from {self.identifier.removeprefix('oci-layout://')}",
                )
            )
        return fetched


#: BuildKit's bound on an OCI layout's index or manifest (maxReadSize)
MAX_READ = 4 << 20


def _digest(identifier: str, value: object) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise UserError(f"{identifier}: {value!r} is not a sha256 digest")
    return value


def parse_oci_layout(
    identifier: str, attrs: Mapping[str, str], platform: Platform | None
) -> OCILayoutJob:
    _, rest = strip_scheme(identifier, {"oci-layout"})
    what = f"source {identifier}"
    check_attrs(what, attrs, "oci.", _KNOWN)
    store, sep, digest = rest.rpartition("@")
    if not sep or not store or not _DIGEST.match(digest):
        raise UserError(
            f"invalid source identifier {identifier!r}: "
            "expected oci-layout://<store>@sha256:<64 hex digits>"
        )
    limit = attrs.get("oci.layerlimit")
    layer_limit = parse_int(what, "oci.layerlimit", limit, low=1) if limit is not None else None
    return OCILayoutJob(
        identifier,
        attrs.get("oci.store", store),
        digest,
        platform,
        attrs.get("oci.session", ""),
        layer_limit,
    )


class OCILayoutSource(BuiltinSource, parser=parse_oci_layout):
    """Images from an OCI image layout (``--oci-layout name=path``)."""
