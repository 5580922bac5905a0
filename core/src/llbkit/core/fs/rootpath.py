"""Resolving a path inside a root directory the way a container would see it.

A build's paths come from users and from files in images: ``..``, absolute symlinks and chains of
symlinks must all resolve *inside* the snapshot, never to the host. Every component is resolved
against the root as if it were ``/``, as containerd's ``fs.RootPath`` does.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path

from llbkit.core.errors import UserError

__all__ = ["MAX_SYMLINKS", "SymlinkLoopError", "resolve_in_root", "resolve_parts"]

#: as Linux's limit on symlinks followed in one lookup (MAXSYMLINKS is 40; Go's is 255)
MAX_SYMLINKS = 255


class SymlinkLoopError(UserError):
    """A path whose symlinks never end (a loop, or more than :data:`MAX_SYMLINKS`)."""


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """Return the host path of ``path`` inside ``root``, following symlinks within ``root``.

    Components that do not exist are kept as they are, so the result also names paths about
    to be created. With ``follow_last=False`` a final symlink is returned itself, not followed.

    :raises SymlinkLoopError: when resolving needs more than :data:`MAX_SYMLINKS` links.
    """
    return Path(root, *resolve_parts(str(root), path, _is_link, os.readlink, follow_last))


def _is_link(host: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(host).st_mode)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return False  # not there (yet): kept as it is
        raise


def resolve_parts(
    root: str,
    path: str,
    is_link: Callable[[str], bool],
    readlink: Callable[[str], str],
    follow_last: bool = True,
) -> list[str]:
    """The components ``path`` resolves to under ``root``, for a tree that is not only what is
    on disk under ``root`` (an overlay's upper over its lower): ``is_link`` and ``readlink``
    are asked of each host path on the way."""
    pending = deque(_parts(path))
    resolved: list[str] = []
    followed = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending and not follow_last:
            resolved.append(part)
            break
        host = os.path.join(root, *resolved, part)
        if not is_link(host):
            resolved.append(part)
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            raise SymlinkLoopError(f"too many levels of symbolic links resolving {path!r}")
        target = readlink(host)
        if target.startswith("/"):
            resolved = []
        pending.extendleft(reversed(_parts(target)))
    return resolved
