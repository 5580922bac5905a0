"""Go's ``os.FileMode`` bits, which fsutil puts on the wire in ``Stat.mode``.

Go keeps the file type and the setuid/setgid/sticky bits high up in its own positions, not where
POSIX ``st_mode`` has them, so a peer written in Go misreads a raw ``st_mode``.
"""

from __future__ import annotations

import stat

__all__ = [
    "MODE_CHAR_DEVICE",
    "MODE_DEVICE",
    "MODE_DIR",
    "MODE_IRREGULAR",
    "MODE_NAMED_PIPE",
    "MODE_PERM",
    "MODE_SETGID",
    "MODE_SETUID",
    "MODE_SOCKET",
    "MODE_STICKY",
    "MODE_SYMLINK",
    "MODE_TYPE",
    "can_request_data",
    "from_posix",
    "go_major",
    "go_minor",
    "is_dir",
    "is_symlink",
    "to_posix_perm",
]

MODE_DIR = 1 << 31
MODE_APPEND = 1 << 30
MODE_EXCLUSIVE = 1 << 29
MODE_TEMPORARY = 1 << 28
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20
MODE_IRREGULAR = 1 << 19
MODE_TYPE = (
    MODE_DIR
    | MODE_SYMLINK
    | MODE_NAMED_PIPE
    | MODE_SOCKET
    | MODE_DEVICE
    | MODE_CHAR_DEVICE
    | MODE_IRREGULAR
)
MODE_PERM = 0o777

_TYPES = {
    stat.S_IFBLK: MODE_DEVICE,
    stat.S_IFCHR: MODE_DEVICE | MODE_CHAR_DEVICE,
    stat.S_IFDIR: MODE_DIR,
    stat.S_IFIFO: MODE_NAMED_PIPE,
    stat.S_IFLNK: MODE_SYMLINK,
    stat.S_IFREG: 0,
    stat.S_IFSOCK: MODE_SOCKET,
}


def from_posix(st_mode: int) -> int:
    """The Go ``FileMode`` that ``os.Lstat`` reports for this ``st_mode``."""
    mode = (st_mode & 0o777) | _TYPES.get(stat.S_IFMT(st_mode), 0)
    if st_mode & stat.S_ISGID:
        mode |= MODE_SETGID
    if st_mode & stat.S_ISUID:
        mode |= MODE_SETUID
    if st_mode & stat.S_ISVTX:
        mode |= MODE_STICKY
    return mode


def to_posix_perm(mode: int) -> int:
    """The bits ``os.Chmod`` passes to chmod(2) for a Go mode: permissions and the special bits."""
    out = mode & MODE_PERM
    if mode & MODE_SETUID:
        out |= stat.S_ISUID
    if mode & MODE_SETGID:
        out |= stat.S_ISGID
    if mode & MODE_STICKY:
        out |= stat.S_ISVTX
    return out


def is_dir(mode: int) -> bool:
    return bool(mode & MODE_DIR)


def is_symlink(mode: int) -> bool:
    return bool(mode & MODE_SYMLINK)


def can_request_data(mode: int) -> bool:
    """Whether a receiver may ask for this entry's content; both sides number files by it."""
    return mode & MODE_TYPE == 0


def go_major(rdev: int) -> int:
    """The major number as fsutil computes it (the old 8/12-bit split, not glibc's)."""
    return (rdev >> 8) & 0xFFF


def go_minor(rdev: int) -> int:
    return (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
