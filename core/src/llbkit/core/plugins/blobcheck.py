"""What every cache backend does with a blob before it sends it: check it is what it claims.

Part of the plugin vocabulary (``docs/cache-backends.md``): a digest that may become a file or
object name is checked first, and a blob is spooled while it is hashed, so a store never holds
bytes under a digest they do not have.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

__all__ = ["DIGEST", "BlobFile", "checked_digest", "verified_spool"]

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class BlobFile:
    """A blob's bytes streamed from a local file holding exactly that blob, verified when it
    entered the engine's content store: what core hands ``CacheStore.write_blob`` for a layer.
    A backend that uploads files may send ``path`` itself instead of iterating (no second copy
    on disk); it must not change, move or delete the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path, "rb") as handle:
            while chunk := await handle.read(1 << 20):
                yield chunk


def checked_digest(digest: str) -> str:
    """``digest`` itself, once it is sure to be ``sha256:<64 hex>`` (never a path)."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


@asynccontextmanager
async def verified_spool(
    digest: str, size: int, chunks: AsyncIterable[bytes], *, prefix: str = "llbkit-blob-"
) -> AsyncIterator[Path]:
    """A temporary file holding ``chunks``, yielded only if they are ``size`` bytes hashing to
    ``digest`` (:class:`ValueError` otherwise); removed when the block ends."""
    checked_digest(digest)
    if isinstance(chunks, BlobFile):  # already in a file, checked by the store: not copied
        found = (await anyio.Path(chunks.path).stat()).st_size
        if found != size:
            raise ValueError(f"blob {digest} ({size} bytes) is {found} bytes in {chunks.path}")
        yield chunks.path
        return
    fd, name = await anyio.to_thread.run_sync(lambda: tempfile.mkstemp(prefix=prefix))
    os.close(fd)
    spool = Path(name)
    try:
        hasher, got = hashlib.sha256(), 0
        async with await anyio.open_file(spool, "wb") as out:
            async for chunk in chunks:
                hasher.update(chunk)
                got += len(chunk)
                await out.write(chunk)
        arrived = "sha256:" + hasher.hexdigest()
        if (arrived, got) != (digest, size):
            raise ValueError(f"blob {digest} ({size} bytes) arrived as {arrived} ({got} bytes)")
        yield spool
    finally:
        spool.unlink(missing_ok=True)
