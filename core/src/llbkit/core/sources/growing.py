"""A file being downloaded, read by another thread as it grows: a layer is unpacked while its
blob is still coming, instead of after (a 1 MB busybox layer from a loopback registry: its
8 ms of download beside its 16 ms of unpacking; a large layer from a remote registry: most of
its unpacking hidden behind the download).

The download writes the file as before (it is kept, for exports) and says how far it got; the
reader waits for bytes not written yet. A download that fails ends the file with its error,
which the reader raises: the unpacked tree is then discarded with the stage it was made in,
as a blob that does not match its digest is (nothing unpacked is committed before the blob
is verified).
"""

from __future__ import annotations

import io
import os
import threading

__all__ = ["DownloadFailed", "GrowingFile"]


class DownloadFailed(Exception):
    """The download a reader was waiting on failed; the download reports why."""


class GrowingFile:
    """The file at ``path``, written by one download; readers from :meth:`reader`."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._changed = threading.Condition()
        self._written = 0
        self._ended = False
        self._failed = False

    def grew(self, written: int) -> None:
        """The first ``written`` bytes are in the file (flushed to it)."""
        with self._changed:
            self._written = written
            self._changed.notify_all()

    def end(self, *, failed: bool = False) -> None:
        """The download is over: the file is whole, or it ``failed`` and will not grow."""
        with self._changed:
            self._ended = True
            self._failed = failed
            self._changed.notify_all()

    def failed(self) -> bool:
        """Whether the download failed, once it is over (waiting for it)."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended)
            return self._failed

    def close(self) -> None:
        os.close(self._fd)

    def reader(self) -> io.BufferedReader:
        """The file from its start, a read waiting until what it asks for was written."""
        return io.BufferedReader(_Reader(self), buffer_size=1 << 20)

    def available(self, offset: int, want: int) -> int:
        """How many bytes from ``offset`` can be read, once there are ``want`` of them or the
        download is over (0: the end of the whole file)."""
        with self._changed:
            while self._written - offset < want and not self._ended:
                self._changed.wait()
            if self._failed:
                raise DownloadFailed("the download stopped")
            return self._written - offset

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)


class _Reader(io.RawIOBase):
    def __init__(self, file: GrowingFile) -> None:
        self._file = file
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # A few kB at least (the format's magic, a tar header), else what came so far.
        size = min(len(buffer), self._file.available(self._offset, min(len(buffer), 4096)))
        data = self._file.pread(size, self._offset)
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)
