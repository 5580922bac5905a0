"""BuildKit's content checksum of a path in a tree: what its solver keys a step by when the
step reads an input's files (a copy's sources, a read-only mount), so that a cache BuildKit
exported finds a step on the build context, and BuildKit finds llbkit's.

An entry's checksum is SHA-256 over its tar header fields (BuildKit's "tarsum v1" selection:
name left empty, mode with the setuid, setgid and sticky bits, owner, size, type, link target,
devices, and the extended attributes but ``security.*`` and ``system.*``; never the time),
then a regular file's bytes. A directory's is SHA-256 over ``\\0`` and its own header's
checksum, then, for each entry in byte order of name, ``\\0``, the name and the entry's
checksum. A path's symlinks are followed inside the tree; the last one too when asked.

A client's directory (a local source) is hashed as BuildKit receives it: owned by 0:0 (buildctl
resets owners as it sends), its top directory's header the empty string's checksum.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from llbkit.core.fs.gomatch import has_wildcards, match

__all__ = ["BuildKitHasher", "content_key"]

_EMPTY = "sha256:" + hashlib.sha256(b"").hexdigest()
#: symlinks followed in one path before BuildKit gives up
_MAX_LINKS = 255


class BuildKitHasher:
    """Checksums of paths in ``tree``; ``local``: a client's directory (see the module)."""

    def __init__(self, tree: Path, *, local: bool) -> None:
        self.tree = str(tree)
        self.local = local
        self._sums: dict[str, str] = {}

    def checksum(self, path: str, *, follow: bool) -> str:
        """The checksum of ``path`` (absolute in the tree); ``follow``: a symlink at the end
        is followed too. A missing path raises FileNotFoundError."""
        path = _clean(path)
        for _ in range(_MAX_LINKS + 1):
            real = self._resolve_parents(path)
            st = os.lstat(self._host(real))
            if follow and stat.S_ISLNK(st.st_mode):
                target = os.readlink(self._host(real))
                if not target.startswith("/"):
                    target = posixpath.join(posixpath.dirname(path), target)
                path = _clean(target)
                continue
            return self._entry(real, st)
        raise OSError(f"too many symlinks: {path}")

    def wildcard(self, pattern: str, *, follow: bool) -> str:
        """The checksum of what ``pattern`` matches, as BuildKit makes it: each entry that
        matches and everything under a folder that does (a folder by its own header), in
        path order; one entry named as the pattern's last part is that entry's checksum,
        else the names (last parts) and checksums joined with NUL, hashed."""
        pattern = _clean(pattern)
        prefix = _literal_prefix(pattern)
        included: list[tuple[str, str]] = []
        matched = ""
        for shown, real, st in self._under(prefix):
            if not matched or not shown.startswith(matched + "/"):
                if not match(pattern, shown):
                    continue
                matched = shown
            if follow and stat.S_ISLNK(st.st_mode):
                included.append((shown, self.checksum(shown, follow=True)))
            elif stat.S_ISDIR(st.st_mode):
                included.append((shown, self._file(real, st)))
            else:
                included.append((shown, self._entry(real, st)))
        if not included:
            return _EMPTY
        if len(included) == 1 and posixpath.basename(pattern) == posixpath.basename(included[0][0]):
            return included[0][1]
        h = hashlib.sha256()
        for n, (shown, digest) in enumerate(included):
            if n:
                h.update(b"\0")
            h.update(os.fsencode(posixpath.basename(shown)) + digest.encode())
        return "sha256:" + h.hexdigest()

    def _under(self, prefix: str) -> Iterator[tuple[str, str, os.stat_result]]:
        """Every entry under the folder ``prefix`` (its symlinks followed; the folder itself
        first), in BuildKit's order: by path, a folder before what it holds. Each as the path
        under ``prefix`` as written, the path in the tree, and its stat."""
        real = prefix
        try:
            for _ in range(_MAX_LINKS + 1):
                real = self._resolve_parents(real)
                st = os.lstat(self._host(real))
                if not stat.S_ISLNK(st.st_mode):
                    break
                target = os.readlink(self._host(real))
                real = _clean(
                    target
                    if target.startswith("/")
                    else posixpath.join(posixpath.dirname(real), target)
                )
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [(prefix, real, st)]
        while stack:
            shown, here, st = stack.pop()
            yield shown, here, st
            if stat.S_ISDIR(st.st_mode):
                names = sorted(os.listdir(self._host(here)), key=os.fsencode, reverse=True)
                for name in names:
                    child = posixpath.join(here, name)
                    stack.append((posixpath.join(shown, name), child, os.lstat(self._host(child))))

    def _host(self, path: str) -> str:
        return self.tree + path if path != "/" else self.tree

    def _resolve_parents(self, path: str) -> str:
        """``path`` with the symlinks among its parents followed inside the tree."""
        parts = [p for p in path.split("/") if p]
        done = "/"
        walked = 0
        while len(parts) > 1:
            head = parts.pop(0)
            here = posixpath.join(done, head)
            try:
                st = os.lstat(self._host(here))
            except FileNotFoundError:
                done = here
                continue
            if stat.S_ISLNK(st.st_mode):
                walked += 1
                if walked > _MAX_LINKS:
                    raise OSError(f"too many links: {path}")
                target = os.readlink(self._host(here))
                base = target if target.startswith("/") else posixpath.join(done, target)
                rest = [p for p in _clean(base).split("/") if p]
                parts = rest + parts
                done = "/"
                continue
            done = here
        return _clean(posixpath.join(done, *parts)) if parts else done

    def _entry(self, path: str, st: os.stat_result) -> str:
        known = self._sums.get(path)
        if known is not None:
            return known
        is_dir = stat.S_ISDIR(st.st_mode)
        digest = self._directory(path, st) if is_dir else self._file(path, st)
        self._sums[path] = digest
        return digest

    def _directory(self, path: str, st: os.stat_result) -> str:
        h = hashlib.sha256()
        header = _EMPTY if (self.local and path == "/") else self._file(path, st)
        h.update(b"\0" + header.encode())
        host = self._host(path)
        for name in sorted(os.listdir(host), key=os.fsencode):
            child = posixpath.join(path, name)
            h.update(b"\0" + os.fsencode(name))
            h.update(self._entry(child, os.lstat(self._host(child))).encode())
        return "sha256:" + h.hexdigest()

    def _file(self, path: str, st: os.stat_result) -> str:
        """A non-directory's checksum, or a directory's own header's."""
        host = self._host(path)
        h = hashlib.sha256(self._header(host, st))
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            with open(host, "rb") as data:
                for block in iter(lambda: data.read(1 << 20), b""):
                    h.update(block)
        return "sha256:" + h.hexdigest()

    def _header(self, host: str, st: os.stat_result) -> bytes:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            kind, size = b"0", st.st_size
        elif stat.S_ISDIR(mode):
            kind, size = b"5", 0
        elif stat.S_ISLNK(mode):
            kind, size = b"2", 0
        elif stat.S_ISCHR(mode):
            kind, size = b"3", 0
        elif stat.S_ISBLK(mode):
            kind, size = b"4", 0
        elif stat.S_ISFIFO(mode):
            kind, size = b"6", 0
        else:  # a socket: BuildKit drops the type bit, leaving a plain file
            kind, size = b"0", st.st_size
        perm = stat.S_IMODE(mode) if not stat.S_ISLNK(mode) else 0o777
        link = os.fsencode(os.readlink(host)) if stat.S_ISLNK(mode) else b""
        uid, gid = (0, 0) if self.local else (st.st_uid, st.st_gid)
        major = minor = 0
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        fields = [
            (b"name", b""),
            (b"mode", str(perm).encode()),
            (b"uid", str(uid).encode()),
            (b"gid", str(gid).encode()),
            (b"size", str(size).encode()),
            (b"typeflag", kind),
            (b"linkname", link),
            (b"uname", b""),
            (b"gname", b""),
            (b"devmajor", str(major).encode()),
            (b"devminor", str(minor).encode()),
            *_xattrs(host),
        ]
        return b"".join(k + v for k, v in fields)


def _xattrs(host: str) -> list[tuple[bytes, bytes]]:
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:  # a filesystem without them
        return []
    kept = []
    for name in names:
        if name.startswith("trusted.overlay."):
            continue  # the store's own marks, never the files'
        if name != "security.capability" and name.startswith(("security.", "system.")):
            continue
        try:
            kept.append((name.encode(), os.getxattr(host, name, follow_symlinks=False)))
        except OSError:
            continue
    return sorted(kept)


def _literal_prefix(pattern: str) -> str:
    """The folder before a pattern's first part with a wildcard (BuildKit's splitWildcards)."""
    parts = pattern.split("/")[1:]
    literal = []
    for part in parts:
        if has_wildcards(part):
            break
        literal.append(part)
    return _clean("/".join(literal))


def _clean(path: str) -> str:
    """Go's ``path.Join("/", path)``."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def content_key(hasher: BuildKitHasher, selectors: Sequence[tuple[str, bool, bool]]) -> str:
    """BuildKit's content key of an input read at ``selectors`` (each a path, whether its
    last symlink is followed, and whether it is a wildcard pattern): the checksums joined with
    NUL, hashed."""
    sums = [
        hasher.wildcard(path, follow=follow) if wild else hasher.checksum(path, follow=follow)
        for path, follow, wild in selectors or [("/", False, False)]
    ]
    return "sha256:" + hashlib.sha256(b"\0".join(s.encode() for s in sums)).hexdigest()
