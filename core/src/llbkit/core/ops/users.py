"""Resolving a process's user in a rootfs, as BuildKit does before running it."""

from __future__ import annotations

from pathlib import Path

from llbkit.core.errors import UserError

__all__ = ["resolve_user"]


def _entries(path: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 2]
    except OSError:
        return []


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` → (uid, gid, supplementary gids),
    looked up in the rootfs's ``/etc/passwd`` and ``/etc/group`` as BuildKit does."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = _entries(rootfs / "etc" / "passwd")
    groups = _entries(rootfs / "etc" / "group")
    uid = gid = -1
    login = ""
    for entry in passwd:
        if entry[0] == name or (name.isdigit() and len(entry) > 2 and entry[2] == name):
            uid, gid, login = int(entry[2]), int(entry[3]), entry[0]
            break
    if uid < 0:
        if not name.isdigit():
            raise UserError(f"unable to find user {name}: no matching entries in passwd file")
        uid, gid = int(name), 0 if not group else -1
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [g for g in groups if g[0] == group]
            if not found:
                raise UserError(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[0][2])
    # An explicit group is the only supplementary group; otherwise the primary group comes
    # first, then the groups listing the user, as BuildKit's processes see them.
    extra = [gid] if group else [max(gid, 0)]
    if login and not group:
        for g in groups:
            members = g[3].split(",") if len(g) > 3 and g[3] else []
            if login in members and int(g[2]) != gid:
                extra.append(int(g[2]))
    return uid, max(gid, 0), extra
