"""Content checksums of paths in a snapshot: what a COPY or a bind mount really reads.

A cache key that includes the checksum of just the selected paths stays the same when unrelated
files change, and is the same on every machine: it covers type, permission bits, owner, size,
symlink targets, xattrs (bar the host-specific ``security.*`` and ``system.*``) and contents,
never timestamps or inode numbers. Directories combine their children's checksums by name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from llbkit.core.errors import UserError
from llbkit.core.fs.gomatch import BAD_PATTERN, BadPattern, has_wildcards, match
from llbkit.core.fs.iterative import Steps, run
from llbkit.core.fs.rootpath import resolve_in_root

__all__ = ["ContentHasher", "PathNotFoundError", "StatCache"]

#: relative path -> (mtime ns, size, inode, ctime ns, content sha256) from an earlier pass
StatCache = MutableMapping[str, tuple[int, int, int, int, str]]

_SKIPPED_XATTR_PREFIXES = ("security.", "system.")


class PathNotFoundError(UserError):
    """A selected path that does not exist in the snapshot."""


class BadPatternError(UserError):
    """A wildcard Go's ``path.Match`` (so BuildKit) refuses: ``[`` never closed, ``[]``."""


def _xattrs(path: str) -> bytes:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:  # filesystems without xattr support have none to hash
        return b""
    out = bytearray()
    for name in names:
        if name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:  # removed while we looked, or unreadable: leave it out
            continue
        out += os.fsencode(name) + b"=" + value.hex().encode() + b"\0"
    return bytes(out)


def _header(st: os.stat_result, kind: bytes, link: str, xattrs: bytes) -> bytes:
    size = st.st_size if kind == b"file" else 0
    dev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (b"chr", b"blk") else (0, 0)
    fields = [
        kind,
        b"%o" % stat.S_IMODE(st.st_mode),
        b"%d" % st.st_uid,
        b"%d" % st.st_gid,
        b"%d" % size,
        os.fsencode(link),
        b"%d:%d" % dev,
        xattrs,
    ]
    return b"\0".join(fields) + b"\0"


def _kind(mode: int) -> bytes:
    for test, name in (
        (stat.S_ISREG, b"file"),
        (stat.S_ISDIR, b"dir"),
        (stat.S_ISLNK, b"link"),
        (stat.S_ISCHR, b"chr"),
        (stat.S_ISBLK, b"blk"),
        (stat.S_ISFIFO, b"fifo"),
        (stat.S_ISSOCK, b"sock"),
    ):
        if test(mode):
            return name
    return b"other"


@dataclass
class ContentHasher:
    """Checksums over one snapshot directory, memoized per path.

    :param stat_cache: for a local context that is re-read often, content hashes keyed by
        path with the stat fields that make them valid; only files whose stat changed are read.
    :param keep: an optional filter on paths relative to the root (include/exclude patterns).
    """

    root: Path
    stat_cache: StatCache | None = None
    keep: Callable[[str], bool] | None = None
    #: files are only ever replaced (new inode), never rewritten in place, so the inode
    #: number says enough and ctime (which hardlinking changes) is left out
    replaced_only: bool = False
    #: for trees whose files never change in place (store layers): content digests by
    #: (device, inode, mtime, size), shared by every hasher of the engine
    inode_cache: MutableMapping[tuple[int, int, int, int], str] | None = None
    #: files whose content was asked for (what a stat cache needs to keep)
    visited: set[str] = field(default_factory=set)
    #: checksums of entries (relative path, links not followed) known to be unchanged since
    #: an earlier pass: neither they nor anything below them is looked at again
    known: Mapping[str, str] | None = None
    _memo: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.known:
            self._memo.update((f"{rel}\0False", digest) for rel, digest in self.known.items())

    def digests(self) -> dict[str, str]:
        """Every entry's checksum this hasher knows (links not followed), for ``known``."""
        return {k[:-6]: v for k, v in self._memo.items() if k.endswith("\0False")}

    def checksum(self, path: str, *, follow_links: bool = True, wildcard: bool = False) -> str:
        """The checksum of ``path`` (a wildcard pattern with ``wildcard``) in the snapshot.

        A wildcard's checksum covers every match (their paths and checksums); no match at all
        gives the checksum of the empty set, which the caller may refuse.
        """
        if wildcard and has_wildcards(path):
            matches = self.glob(path)
            digest = hashlib.sha256(b"wildcard\0")
            for rel in matches:
                digest.update(
                    os.fsencode(rel) + b"\0" + self._entry(rel, follow_links).encode() + b"\0"
                )
            return "sha256:" + digest.hexdigest()
        host = resolve_in_root(self.root, path, follow_last=follow_links)
        rel = os.path.relpath(host, self.root)
        if not os.path.lexists(host):
            raise PathNotFoundError(f"{path}: not found")
        return self._entry("" if rel == "." else rel, follow_links=False)

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching ``pattern``, one component at a time, sorted.

        Components are matched as Go's ``path.Match`` matches them (BuildKit's matcher); those
        before the first wildcard are taken as written. A malformed pattern is
        :class:`BadPatternError`.
        """
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        first = next((n for n, part in enumerate(parts) if has_wildcards(part)), len(parts))
        try:  # malformed is an error even where nothing is there to match
            for part in parts[first:]:
                match(part, "")
        except BadPattern:
            raise BadPatternError(BAD_PATTERN) from None
        found = [""]
        for n, part in enumerate(parts):
            following: list[str] = []
            for base in found:
                host = resolve_in_root(self.root, base)
                if n >= first:
                    try:
                        names = sorted(os.listdir(host))
                    except (NotADirectoryError, FileNotFoundError):
                        continue
                    following += [os.path.join(base, x) for x in names if match(part, x)]
                elif os.path.lexists(os.path.join(host, part)):
                    following.append(os.path.join(base, part))
            found = following
        return sorted(p for p in found if p)

    def _entry(self, rel: str, follow_links: bool) -> str:
        return run(self._entry_steps(rel, follow_links))

    def _entry_steps(self, rel: str, follow_links: bool) -> Steps[str]:
        """One entry's checksum; a directory's children through ``run``, so any depth."""
        key = f"{rel}\0{follow_links}"
        known = self._memo.get(key)
        if known is not None:
            return known
        host = os.path.join(self.root, rel) if rel else str(self.root)
        st = os.lstat(host)
        if follow_links and stat.S_ISLNK(st.st_mode):
            target = os.path.relpath(resolve_in_root(self.root, rel), self.root)
            followed: str = yield self._entry_steps(target, False)
            return followed
        kind = _kind(st.st_mode)
        link = os.readlink(host) if kind == b"link" else ""
        digest = hashlib.sha256(_header(st, kind, link, _xattrs(host)))
        if kind == b"file":
            digest.update(self._content(rel, host, st).encode())
        elif kind == b"dir":
            for name in sorted(os.listdir(host)):
                child = os.path.join(rel, name) if rel else name
                if self.keep is not None and not self.keep(child):
                    continue
                below: str = yield self._entry_steps(child, False)
                digest.update(os.fsencode(name) + b"\0" + below.encode() + b"\0")
        result = "sha256:" + digest.hexdigest()
        self._memo[key] = result
        return result

    def _content(self, rel: str, host: str, st: os.stat_result) -> str:
        self.visited.add(rel)
        ctime = 0 if self.replaced_only else st.st_ctime_ns
        valid = (st.st_mtime_ns, st.st_size, st.st_ino, ctime)
        if self.stat_cache is not None:
            cached = self.stat_cache.get(rel)
            if cached is not None and cached[:4] == valid:
                return cached[4]
        inode = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if self.inode_cache is not None:
            known = self.inode_cache.get(inode)  # one lookup: the cache may be a database
            if known is not None:
                return known
        with open(host, "rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        if self.stat_cache is not None:
            self.stat_cache[rel] = (*valid, content)
        if self.inode_cache is not None:
            self.inode_cache[inode] = content
        return content
