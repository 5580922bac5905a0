"""Images in the worker's image store (containerd's): found there before asking a registry,
and the blobs pulled for a build written there, so the runtime's own tools see them and its
garbage collector keeps them under the store's lease."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from llbkit.core.llb.digest import digest_of

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform
    from llbkit.core.plugins.imagestore import ImageStore
    from llbkit.core.reference import Reference
    from llbkit.core.registry.client import ResolvedImage

__all__ = ["keep_blob", "resolve_stored"]


async def resolve_stored(
    store: ImageStore, ref: Reference, platform: Platform
) -> ResolvedImage | None:
    """``ref`` for ``platform`` as the store has it (by name, or by digest for a pinned
    reference), or ``None`` when the store lacks the image or any part of its manifest."""
    from llbkit.core.registry.client import (
        INDEX_TYPES,
        Descriptor,
        RegistryError,
        ResolvedImage,
        platform_matches,
    )

    target = await store.find_image(str(ref))
    digest = target.digest if target is not None else ref.digest
    if not digest or (ref.digest and digest != ref.digest):
        return None
    where = f"{ref} in {store.name}"
    manifest = await _read_json(store, digest, where)
    if manifest is None:
        return None
    index_digest = ""
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        index_digest = digest
        listed = manifest.get("manifests")
        if not isinstance(listed, list):
            raise RegistryError(f"{where}: index {digest}: manifests is not a list")
        chosen = [m for m in listed if isinstance(m, dict) and platform_matches(m, platform)]
        if not chosen:
            return None
        digest = Descriptor.parse(chosen[0], f"{where}: index").digest
        manifest = await _read_json(store, digest, where)
        if manifest is None:
            return None
    config_desc = Descriptor.parse(manifest.get("config") or {}, f"{where}: config")
    listed_layers = manifest.get("layers")
    if not isinstance(listed_layers, list):
        raise RegistryError(f"{where}: manifest {digest}: layers is not a list")
    layers = [Descriptor.parse(d, f"{where}: layer") for d in listed_layers]
    config_bytes = await _read_small(store, config_desc.digest, where)
    if config_bytes is None:
        return None
    try:
        config = json.loads(config_bytes)
    except (ValueError, RecursionError):
        raise RegistryError(f"{where}: config {config_desc.digest} is not JSON") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{where}: config {config_desc.digest} is not a JSON object")
    return ResolvedImage(ref, digest, config, config_bytes, layers, index_digest)


async def _read_json(store: ImageStore, digest: str, where: str) -> dict[str, Any] | None:
    from llbkit.core.registry.client import RegistryError

    data = await _read_small(store, digest, where)
    if data is None:
        return None
    try:
        found = json.loads(data)
    except ValueError:
        raise RegistryError(f"{where}: {digest} is not JSON") from None
    if not isinstance(found, dict):
        raise RegistryError(f"{where}: {digest} is not a JSON object")
    return found


async def _read_small(store: ImageStore, digest: str, where: str) -> bytes | None:
    """A manifest, index or config from the store, verified; ``None`` if it is not there."""
    from llbkit.core.registry.client import MAX_MANIFEST, RegistryError

    if not await store.hold_blob(digest):
        return None
    data = bytearray()
    async for chunk in store.read_blob(digest):
        data += chunk
        if len(data) > MAX_MANIFEST:
            raise RegistryError(f"{where}: {digest} is larger than {MAX_MANIFEST} bytes")
    if digest_of(bytes(data)) != digest:
        raise RegistryError(f"{where}: {digest} does not match its digest")
    return bytes(data)


async def keep_blob(store: ImageStore, path: Path, *, digest: str, size: int, media: str) -> None:
    """Write a pulled blob into the store unless it is there; either way under the lease."""
    if await store.hold_blob(digest):
        return
    await store.write_blob(digest, _chunks(path), size=size, media_type=media)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(1 << 20):
            yield chunk
