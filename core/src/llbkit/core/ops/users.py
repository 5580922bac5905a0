"""Resolving a process's user in a rootfs, as BuildKit does before running it."""

from __future__ import annotations

from pathlib import Path

from llbkit.core.errors import UserError
from llbkit.core.fs.rootpath import resolve_in_root

__all__ = ["read_entries", "resolve_user"]


def read_entries(root: Path, file: str) -> list[list[str]]:
    """The entries of ``file`` (``/etc/passwd`` or ``/etc/group``) in the rootfs ``root``,
    resolved inside it (an image's symlinks never reach the host), split on ``:``. Lines with
    fewer than three fields are skipped; shorter entries are padded to four fields with ``""``.
    A file that cannot be read has no entries."""
    try:
        text = resolve_in_root(root, file).read_text(errors="replace")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3:
            entries.append(parts + [""] * (4 - len(parts)))
    return entries


def _id(text: str) -> int:
    """A numeric field; an empty or invalid one is 0, as Go's parser leaves it."""
    try:
        return int(text)
    except ValueError:
        return 0


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` → (uid, gid, supplementary gids),
    looked up in the rootfs's ``/etc/passwd`` and ``/etc/group`` as BuildKit does."""
    if not user:  # root, with the groups the rootfs lists it in (if it can be read)
        try:
            return resolve_user(rootfs, "0")
        except UserError:
            return 0, 0, [0]
    name, _, group = user.partition(":")
    passwd = read_entries(rootfs, "/etc/passwd")
    groups = read_entries(rootfs, "/etc/group")
    uid = gid = -1
    login = ""
    for entry in passwd:
        if entry[0] == name or (_number(name) and entry[2] == name):
            uid, gid, login = _id(entry[2]), _id(entry[3]), entry[0]
            break
    if uid < 0:
        if not _number(name):
            raise UserError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(name), 0 if not group else -1
    if group:
        if _number(group):
            gid = int(group)
        else:
            found = [g for g in groups if g[0] == group]
            if not found:
                raise UserError(f"unable to find group {group}: no matching entries in group file")
            gid = _id(found[0][2])
    # An explicit group is the only supplementary group; otherwise the primary group comes
    # first, then the groups listing the user, as BuildKit's processes see them.
    extra = [gid] if group else [max(gid, 0)]
    if login and not group:
        for g in groups:
            members = g[3].split(",") if g[3] else []
            if login in members and _id(g[2]) != gid:
                extra.append(_id(g[2]))
    return uid, max(gid, 0), extra


def _number(text: str) -> bool:
    """An id written as ASCII digits, as Go reads one (``²`` and ``٣`` are names, not ids)."""
    return text.isascii() and text.isdigit()
