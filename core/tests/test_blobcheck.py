"""The blob checks every cache backend shares: a digest is a name only once it is sha256, and
bytes reach a store only once they are what they claim."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from llbkit.core.plugins.blobcheck import BlobFile, checked_digest, verified_spool


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_digest_that_could_be_a_path_is_refused() -> None:
    good = "sha256:" + "a" * 64
    assert checked_digest(good) == good
    for bad in ("sha256:../../etc/passwd", "sha512:" + "a" * 128, "sha256:" + "A" * 64, ""):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            checked_digest(bad)


def test_a_spool_is_yielded_only_for_the_right_bytes_and_always_removed() -> None:
    data = b"layer" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    seen: list[Path] = []

    async def good() -> bytes:
        async with verified_spool(digest, len(data), _chunks(data[:10], data[10:])) as spool:
            seen.append(spool)
            return spool.read_bytes()

    assert anyio.run(good) == data
    assert not seen[0].exists()

    async def bad(size: int, payload: bytes) -> None:
        async with verified_spool(digest, size, _chunks(payload)) as spool:
            seen.append(spool)

    with pytest.raises(ValueError, match="arrived as"):
        anyio.run(bad, len(data), b"tampered")
    with pytest.raises(ValueError, match="arrived as"):
        anyio.run(bad, len(data) + 1, data)
    assert len(seen) == 1  # neither bad blob reached the block


def test_a_blob_already_in_a_file_is_used_in_place(tmp_path: Path) -> None:
    data = b"stored layer" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layer = tmp_path / "blob"
    layer.write_bytes(data)

    async def spooled(size: int) -> Path:
        async with verified_spool(digest, size, BlobFile(layer)) as spool:
            return spool

    assert anyio.run(spooled, len(data)) == layer  # no copy of the store's file
    assert layer.read_bytes() == data  # and left where it was
    with pytest.raises(ValueError, match=f"is {len(data)} bytes"):
        anyio.run(spooled, len(data) - 1)

    async def streamed() -> bytes:
        return b"".join([chunk async for chunk in BlobFile(layer)])

    assert anyio.run(streamed) == data  # a backend that streams reads it as it is
