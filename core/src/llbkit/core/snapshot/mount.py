"""Overlay mounts through mount(2) directly: a subprocess per mount would dominate a chain of
1,000 small file ops, and the syscall costs well under a millisecond."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_OPTIONS",
    "MountError",
    "bind_readonly",
    "mount_overlay",
    "stale_mounts",
    "unmount",
]

#: mount(2) copies at most one page of options.
MAX_OPTIONS = 4000
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MS_BIND = 4096
_MNT_DETACH = 2


@functools.cache
def _libc() -> Any:
    """libc's mount(2) and umount2(2), made callable when first needed (ctypes is a
    millisecond of the start of every command, and most mount nothing)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


class MountError(OSError):
    """A mount or unmount the kernel refused."""


def overlay_options(
    lowers: Sequence[str | Path], upper: str | Path | None = None, work: str | Path | None = None
) -> str:
    """The option string for ``lowers`` (top first) and an optional upper/work pair."""
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None:
        options += f",upperdir={upper},workdir={work}"
    # Keep every upper self-contained, so that it can serve as a plain layer later.
    return options + ",index=off,redirect_dir=off,metacopy=off"


def mount_overlay(
    target: Path,
    lowers: Sequence[str | Path],
    upper: Path | None = None,
    work: Path | None = None,
) -> None:
    """Mount an overlay of ``lowers`` (top first) at ``target``; read-only without ``upper``."""
    options = overlay_options(lowers, upper, work)
    if len(options) > MAX_OPTIONS:
        raise MountError(f"overlay options too long ({len(options)} bytes)")
    flags = 0 if upper is not None else _MS_RDONLY
    if _libc().mount(b"overlay", os.fsencode(target), b"overlay", flags, options.encode()) != 0:
        err = _errno()
        raise MountError(err, f"mount overlay on {target}: {os.strerror(err)}")


def bind_readonly(source: Path, target: Path) -> None:
    """Show ``source`` at ``target``, read-only (a bind mount, then a read-only remount)."""
    if _libc().mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None) != 0:
        err = _errno()
        raise MountError(err, f"bind {source} on {target}: {os.strerror(err)}")
    flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY
    if _libc().mount(None, os.fsencode(target), None, flags, None) != 0:
        err = _errno()
        unmount(target)
        raise MountError(err, f"remount {target} read-only: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Unmount ``target``, detaching it if something still holds it open."""
    if _libc().umount2(os.fsencode(target), 0) == 0:
        return
    err = _errno()
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) != 0:
        raise MountError(err, f"unmount {target}: {os.strerror(err)}")


def stale_mounts(under: Path) -> list[Path]:
    """Mount points below ``under`` (deepest first), e.g. left by a process that was killed."""
    prefix = os.path.realpath(under) + os.sep
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(found, key=lambda p: len(p.parts), reverse=True)
