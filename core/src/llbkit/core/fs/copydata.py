"""Copying one regular file's bytes with as few system calls as the kernel allows.

``copy_file_range`` copies inside the kernel (and shares extents where the filesystem can, as
XFS and btrfs do); a context of thousands of small files spends more on per-file overhead than
on bytes, so this skips what ``shutil.copyfile`` adds (same-file checks, Python file objects).
"""

from __future__ import annotations

import errno
import os

__all__ = ["copy_data"]

_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def copy_data(src: str, dst: str, size: int, mode: int = 0o600) -> None:
    """Make ``dst`` hold ``src``'s bytes, never writing through a symlink at ``dst``."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fout = os.open(dst, flags, mode)
        try:
            _copy_fds(fin, fout, size)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_fds(fin: int, fout: int, size: int) -> None:
    try:
        while True:
            # Ask for more than the hint: the file may have grown; 0 means end of file.
            if os.copy_file_range(fin, fout, max(size, 1 << 20)) == 0:
                return
    except OSError as err:
        if err.errno not in _FALLBACK:
            raise
    # Not supported between these files: a plain read/write loop from where it stopped.
    while chunk := os.read(fin, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fout, view) :]
