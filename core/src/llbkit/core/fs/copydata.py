"""Copying one regular file's bytes with as few system calls as the kernel allows.

``copy_file_range`` copies inside the kernel (and shares extents where the filesystem can, as
XFS and btrfs do); a context of thousands of small files spends more on per-file overhead than
on bytes, so this skips what ``shutil.copyfile`` adds (same-file checks, Python file objects).
"""

from __future__ import annotations

import errno
import os

__all__ = ["copy_data", "mirror_file"]

#: O_NONBLOCK: a FIFO put where a regular file was never blocks the open (no effect on files).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def copy_data(src: str, dst: str, size: int, mode: int = 0o600) -> None:
    """Make ``dst`` hold ``src``'s bytes, never writing through a symlink at ``dst``."""
    fin = os.open(src, _READ)
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


def mirror_file(src: str, dst: str, st: os.stat_result) -> None:
    """Make a new file ``dst`` hold ``src``'s bytes as ``st`` saw them (``st.st_size`` bytes),
    with its owner (as root), mode and times set through the open descriptor.

    The times are set last: a copy cut short by a crash keeps the time of the crash, so a later
    mirror (which compares size and modification time) copies it again.
    """
    fin = os.open(src, _READ)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fout = os.open(dst, flags, 0o600)
        try:
            _copy_size(fin, fout, st.st_size)
            if _ROOT:
                os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, st.st_mode & 0o7777)
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_size(fin: int, fout: int, size: int) -> None:
    """Copy ``size`` bytes (fewer if the file shrank): what its stat promised, no probe for
    more (a file that grew is newer than that stat, and is copied again next time)."""
    done = 0
    try:
        while done < size:
            moved = os.copy_file_range(fin, fout, size - done)
            if moved == 0:
                return
            done += moved
        return
    except OSError as err:
        if err.errno not in _FALLBACK:
            raise
    os.lseek(fin, done, os.SEEK_SET)
    os.lseek(fout, done, os.SEEK_SET)
    while done < size and (chunk := os.read(fin, min(1 << 20, size - done))):
        view = memoryview(chunk)
        done += len(view)
        while view:
            view = view[os.write(fout, view) :]


_ROOT = os.geteuid() == 0
