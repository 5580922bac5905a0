"""Content digests of the files a context transfer just wrote, by inode.

The receiver hashes each file's data as it arrives; the checksum that follows the transfer
(a mirror's, in the same process) takes them from here instead of reading every new file
back from the disk. A key holds the inode with the mtime and size the receiver gave the file:
a mirror's files are replaced, never rewritten, and every file the receiver writes sets its
own entry, so a recycled inode cannot answer with another file's digest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping

__all__ = ["ReceivedDigests", "remember"]

#: (device, inode, mtime ns, size) -> sha256 hex of the content
Key = tuple[int, int, int, int]

_LIMIT = 100_000
_digests: dict[Key, str] = {}
_lock = threading.Lock()


def remember(key: Key, digest: str) -> None:
    """Keep ``digest`` for ``key``; the oldest half goes when the table is full."""
    with _lock:
        if len(_digests) >= _LIMIT:
            for old in list(_digests)[: _LIMIT // 2]:
                del _digests[old]
        _digests[key] = digest


class ReceivedDigests(MutableMapping[Key, str]):
    """The table as a :class:`~llbkit.core.fs.contenthash.ContentHasher` inode cache. A digest
    is taken out when it is read (the checksum reads each file once; its stat cache keeps the
    result), and what the hasher computes itself is not added: the table stays as small as
    the transfers not yet summed."""

    def __getitem__(self, key: Key) -> str:
        with _lock:
            return _digests.pop(key)

    def get(self, key: Key, default: str | None = None) -> str | None:  # type: ignore[override]
        with _lock:
            return _digests.pop(key, default)

    def __setitem__(self, key: Key, digest: str) -> None:
        pass

    def __delitem__(self, key: Key) -> None:
        with _lock:
            del _digests[key]

    def __iter__(self) -> Iterator[Key]:
        with _lock:
            return iter(list(_digests))

    def __len__(self) -> int:
        return len(_digests)
