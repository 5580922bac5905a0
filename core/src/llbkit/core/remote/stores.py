"""What a daemon's client does around a build for content stores on its own disk, as buildctl
does: offer each ``type=local`` cache directory (``local:<dir>``) and ``--oci-layout`` store
(``oci:<name>``), turn an import's tag into ``digest=`` from ``index.json`` beforehand, and
afterwards name the exported cache manifest in each export directory's ``index.json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from llbkit.core import ocilayout
from llbkit.core.control.request import CacheOptionsEntry, SolveRequest, SolveResponse
from llbkit.core.errors import UserError

__all__ = ["LocalStores", "local_stores", "update_indexes"]


@dataclass(frozen=True)
class LocalStores:
    """The request as the daemon gets it, the stores to serve, and the indexes to update."""

    request: SolveRequest
    stores: Mapping[str, Path]
    #: export directory -> tag, named in its index.json once the build answers
    exports: Mapping[Path, str]


def _read_index(folder: Path, tag: str) -> str:
    """The digest ``tag`` names in ``folder/index.json``; a reason in an exception otherwise."""
    where = f"{folder / 'index.json'}"
    try:
        data = (folder / "index.json").read_bytes()
    except OSError as err:
        raise LookupError(f"{where}: {err.strerror}") from None
    entry = ocilayout.find_entry(ocilayout.parse_index(data, where), tag)
    digest = entry.get("digest") if entry else None
    if not isinstance(digest, str) or not ocilayout.DIGEST.fullmatch(digest):
        raise LookupError(f"{where} has no manifest tagged {tag!r}")
    return digest


def local_stores(request: SolveRequest, layouts: Mapping[str, Path]) -> LocalStores:
    """Prepare ``request``'s local caches and ``layouts`` for a daemon."""
    stores: dict[str, Path] = {f"oci:{name}": Path(path) for name, path in layouts.items()}
    exports: dict[Path, str] = {}
    for entry in request.cache_exports:
        if entry.type == "local":
            dest = entry.attrs.get("dest", "")
            if not dest:
                raise UserError("--export-cache type=local needs dest=<directory>")
            stores[f"local:{dest}"] = Path(dest)
            exports[Path(dest)] = entry.attrs.get("tag") or "latest"
    imports: list[CacheOptionsEntry] = []
    for entry in request.cache_imports:
        if entry.type != "local":
            imports.append(entry)
            continue
        src = entry.attrs.get("src", "")
        if not src:
            raise UserError("--import-cache type=local needs src=<directory>")
        attrs = dict(entry.attrs)
        if not attrs.get("digest"):
            try:
                attrs["digest"] = _read_index(Path(src), attrs.get("tag") or "latest")
            except LookupError as why:  # as buildctl: a cache not there yet is no error
                sys.stderr.write(f"warning: local cache import at {src} not found: {why}\n")
                continue
        stores[f"local:{src}"] = Path(src)
        imports.append(CacheOptionsEntry(entry.type, attrs))
    sent = replace(request, cache_imports=imports)
    return LocalStores(sent, stores, exports)


async def update_indexes(stores: LocalStores, response: SolveResponse) -> None:
    """Name the exported cache manifest in each export directory's ``index.json`` (under its
    lock, as the embedded cache does), and mark the directory an OCI layout."""
    from llbkit.core.client.directory import FileDirectory

    text = response.exporter_response.get("cache.manifest", "")
    if not text or not stores.exports:
        return
    desc = json.loads(text)
    for folder, tag in stores.exports.items():
        entry = {
            "mediaType": desc["mediaType"],
            "digest": desc["digest"],
            "size": desc["size"],
            "annotations": {**(desc.get("annotations") or {}), ocilayout.REF_NAME: tag},
        }
        where = f"cache {folder}: index.json"
        directory = FileDirectory(folder)
        if not await directory.exists("oci-layout"):
            async with directory.write("oci-layout") as out:
                await out.write(ocilayout.LAYOUT)

        def put(
            current: bytes | None,
            entry: dict[str, object] = entry,
            tag: str = tag,
            where: str = where,
        ) -> bytes:
            return ocilayout.put_entry(current, entry, tag, where)

        await directory.update("index.json", put)
