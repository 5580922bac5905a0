"""A tree as the cases compare it: what BuildKit's output and ours must agree on."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def listing(root: Path) -> dict[str, dict[str, Any]]:
    """Per path: type, permission bits, owner, size, content digest or link target, hardlink
    group, and the modification time where the case fixed one (before 2021)."""
    found: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            entry: dict[str, Any] = {
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "uid": st.st_uid,
                "gid": st.st_gid,
            }
            if stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                entry["type"] = "symlink"
                entry["target"] = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                entry["type"] = "file"
                entry["size"] = st.st_size
                entry["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    entry["hardlink"] = inodes.setdefault(key, rel)
            else:
                entry["type"] = "other"
            if st.st_mtime < 1_609_459_200 and not stat.S_ISDIR(st.st_mode):
                entry["mtime"] = int(st.st_mtime)
            found[rel] = entry
    return found


def tar_listing(data: bytes) -> dict[str, dict[str, Any]]:
    """The same facts, read from a tarball (``--output type=tar``), which keeps ownership."""
    import io
    import tarfile

    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            name = member.name.rstrip("/")
            entry: dict[str, Any] = {
                "mode": oct(member.mode & 0o7777),
                "uid": member.uid,
                "gid": member.gid,
            }
            if member.isdir():
                entry["type"] = "dir"
            elif member.issym():
                entry["type"] = "symlink"
                entry["target"] = member.linkname
            elif member.islnk():
                entry["type"] = "file"
                entry["hardlink"] = member.linkname.rstrip("/")
                first = found[entry["hardlink"]]
                first.setdefault("hardlink", entry["hardlink"])
                entry["size"] = first["size"]
                entry["sha256"] = first["sha256"]
            elif member.isreg():
                entry["type"] = "file"
                entry["size"] = member.size
                body = tar.extractfile(member)
                entry["sha256"] = hashlib.sha256(body.read() if body else b"").hexdigest()
            else:
                entry["type"] = "other"
            if member.mtime < 1_609_459_200 and not member.isdir():
                entry["mtime"] = int(member.mtime)
            found[name] = entry
    return dict(sorted(found.items()))
