"""fsutil's walker: which entries of a directory a DiffCopy sends, in which order, with which stat.

A receiver numbers files by their place in the listing and diffs it against its own tree in the
same order, so the order (Go's ``filepath.Walk``: names sorted bytewise, parents first), the
filtering (include/exclude patterns, with a parent directory sent only once something below it
is) and each ``Stat`` must be what fsutil produces. Runs in a worker thread.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Generator, Iterator, Sequence

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.patterns import Pattern, PatternError, PatternMatcher, clean
from llbkit.core.session import gomode
from llbkit.core.session.stream import DiffCopyError

__all__ = ["follow_links", "mkstat", "walk"]

Stat = fsutil_pb2.Stat

#: characters that make an include/exclude pattern more than a plain path prefix
_PATTERN_CHARS = frozenset("*[]?^\\")

# What the walker tells the loop to do after an entry.
_DESCEND = 0  # go on (into the entry, if it is a readable directory)
_SKIP_DIR = 1  # do not enter this directory
_SKIP_REST = 2  # skip the rest of the current directory (Go's SkipDir returned for a file)


def _utf8(name: str, what: str) -> str:
    try:
        name.encode()
    except UnicodeEncodeError:
        shown = name.encode(errors="surrogateescape").decode(errors="replace")
        raise DiffCopyError(
            f"{what} {shown!r} is not valid UTF-8, which a DiffCopy stream cannot carry"
        ) from None
    return name


def mkstat(
    abspath: str,
    rel: str,
    st: os.stat_result,
    seen: dict[tuple[int, int], str] | None,
    *,
    xattrs: bool = True,
) -> fsutil_pb2.Stat:
    """The ``Stat`` fsutil sends for an entry; ``seen`` maps inodes to their first path, so
    later links to one name it in ``linkname``."""
    out = Stat(
        path=_utf8(rel, "path"),
        # Go clears the socket bit: a socket travels (and is recreated) as an empty file.
        mode=gomode.from_posix(st.st_mode) & ~gomode.MODE_SOCKET,
        uid=st.st_uid,
        gid=st.st_gid,
        modTime=st.st_mtime_ns,
    )
    if not stat.S_ISDIR(st.st_mode):
        # fsutil tests these bits, not the file type, so it reads rdev for symlinks too.
        if st.st_mode & (stat.S_IFBLK | stat.S_IFCHR):
            out.devmajor = gomode.go_major(st.st_rdev)
            out.devminor = gomode.go_minor(st.st_rdev)
        if seen is not None:
            key = (st.st_dev, st.st_ino)
            first = seen.get(key) if st.st_nlink > 1 else None
            if first is None:
                seen[key] = rel
            else:
                out.linkname = first
        out.size = st.st_size
        if stat.S_ISLNK(st.st_mode):
            out.linkname = _utf8(os.readlink(abspath), f"target of {rel!r}")
    if xattrs:
        _load_xattrs(abspath, out)
    return out


def _load_xattrs(abspath: str, out: fsutil_pb2.Stat) -> None:
    try:
        names = os.listxattr(abspath, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            out.xattrs[name] = os.getxattr(abspath, name, follow_symlinks=False)
        except OSError:
            continue  # gone since listing, or not readable by us: fsutil skips it too


# ---- follow paths: symlinks resolved into include patterns before walking ---------------------


def _join(*elems: str) -> str:
    """Go's ``filepath.Join``: empty elements dropped, the rest cleaned (never absolute-resets)."""
    parts = [e for e in elems if e]
    return clean("/".join(parts)) if parts else ""


def _dir(path: str) -> str:
    return clean(posixpath.dirname(path))


def _contains_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        if name[i] == "\\":
            i += 1
        elif name[i] in "*?[":
            return True
        i += 1
    return False


def _match_name(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` for one name; a bad pattern matches nothing, as fsutil ignores
    the error. Runs of ``*`` mean one ``*`` there (no ``**`` in a single name)."""
    try:
        return Pattern(re.sub(r"\*{2,}", "*", pattern)).match(name)
    except PatternError:
        return False


def _dedupe(paths: Sequence[str]) -> list[str] | None:
    """fsutil's ``dedupePaths``: drops paths under the previously kept one; None (no filter at
    all) once ``.`` appears."""
    out: list[str] = []
    last = ""
    for path in paths:
        if path == ".":
            return None
        if path.startswith(last + "/"):
            continue
        out.append(path)
        last = path
    return out


class _SymlinkResolver:
    def __init__(self, root: str) -> None:
        self.root = root
        self.resolved: set[str] = set()

    def append(self, path: str) -> None:
        rest = _join(".", path)
        current = "."
        while True:
            head, _, rest = rest.partition("/")
            current = _join(current, head)
            targets = self.read_symlink(current, allow_wildcard=True)
            if (not rest or targets is not None) and current in self.resolved:
                return
            if targets is not None:
                self.resolved.add(current)
                for target in targets:
                    self.append(_join(target, rest))
                return
            if not rest:
                self.resolved.add(current)
                return

    def read_symlink(self, path: str, *, allow_wildcard: bool) -> list[str] | None:
        real = _join(self.root, path)
        base = posixpath.basename(path)
        if allow_wildcard and _contains_wildcards(base):
            try:
                names = sorted(os.listdir(_dir(real)))
            except FileNotFoundError:
                return None
            out: list[str] = []
            for name in names:
                if _match_name(base, name):
                    out.extend(
                        self.read_symlink(_join(_dir(path), name), allow_wildcard=False) or []
                    )
            return out or None
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            return None
        link = clean(os.readlink(real))
        if link.startswith("/"):
            return [link]
        return [_join("/", _join(_dir(path), link))]


def follow_links(root: str, paths: Sequence[str]) -> list[str] | None:
    """fsutil's ``FollowLinks``: ``paths`` plus, for each symlink on the way, its target (taken
    inside ``root``), as include patterns; None when one of them is the root itself."""
    resolver = _SymlinkResolver(root)
    for path in paths:
        resolver.append(path)
    return _dedupe(sorted(resolver.resolved))


# ---- the walk ----------------------------------------------------------------------------------


def _without_trailing_glob(pattern: Pattern) -> str:
    return pattern.text.removesuffix("/**").removesuffix("/*")


def _match(
    matcher: PatternMatcher, path: str, parent: list[bool] | None
) -> tuple[bool, list[bool]]:
    """patternmatcher's ``MatchesUsingParentResults``: a pattern the parent directory matched
    matches here without being tried again; also returns this path's per-pattern results."""
    patterns = matcher.patterns
    use_parent = bool(parent)
    matched = False
    info = [False] * len(patterns)
    for i, pattern in enumerate(patterns):
        hit = use_parent and parent is not None and parent[i]
        if not hit:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and not use_parent:
                head = posixpath.dirname(path)
                if head:
                    parts = head.split("/")
                    hit = any(pattern.match("/".join(parts[: j + 1])) for j in range(len(parts)))
        info[i] = hit
        if hit:
            matched = not pattern.exclusion
    return matched, info


class _Dir:
    """A directory on the way down, kept while walking below it (only when filtering)."""

    __slots__ = ("abspath", "called", "exc", "inc", "path", "prefix", "st")

    def __init__(self, path: str, abspath: str, st: os.stat_result) -> None:
        self.path = path
        self.prefix = path + "/"
        self.abspath = abspath
        self.st = st
        self.inc: list[bool] | None = None
        self.exc: list[bool] | None = None
        self.called = False


class _Walker:
    def __init__(
        self,
        inc: PatternMatcher | None,
        exc: PatternMatcher | None,
        *,
        xattrs: bool,
    ) -> None:
        self.inc = inc
        self.exc = exc
        self.xattrs = xattrs
        self.seen: dict[tuple[int, int], str] = {}
        self.parents: list[_Dir] = []
        self.out: list[fsutil_pb2.Stat] = []
        # Plain-prefix patterns let a directory nothing could match below be skipped whole.
        self.include_prefixes: list[str] | None = None
        if inc is not None:
            plain = [_without_trailing_glob(p) for p in inc.patterns if not p.exclusion]
            if not any(_PATTERN_CHARS.intersection(text) for text in plain):
                self.include_prefixes = [text + "/" for text in plain]
        self.exception_prefixes: list[str] | None = None
        if exc is not None:
            plain = [_without_trailing_glob(p) for p in exc.patterns if p.exclusion]
            if not any(_PATTERN_CHARS.intersection(text) for text in plain):
                self.exception_prefixes = [text + "/" for text in plain]

    def _stat(self, path: str, abspath: str, st: os.stat_result) -> fsutil_pb2.Stat:
        return mkstat(abspath, path, st, self.seen, xattrs=self.xattrs)

    def visit(self, path: str, abspath: str, st: os.stat_result | None, err: OSError | None) -> int:
        """One entry, as fsutil's walk callback treats it; appends what to send to ``out``."""
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        parents = self.parents
        here: _Dir | None = None
        if self.inc is not None or self.exc is not None:
            while parents and not path.startswith(parents[-1].prefix):
                parents.pop()
            if is_dir:
                assert st is not None
                here = _Dir(path, abspath, st)
        skip = False
        if self.inc is not None:
            hit, info = _match(self.inc, path, parents[-1].inc if parents else None)
            if here is not None:
                here.inc = info
            if not hit:
                if is_dir and self.include_prefixes is not None:
                    below = path + "/"
                    if not any(p.startswith(below) for p in self.include_prefixes):
                        return _SKIP_DIR
                skip = True
        if self.exc is not None:
            hit, info = _match(self.exc, path, parents[-1].exc if parents else None)
            if here is not None:
                here.exc = info
            if hit:
                if is_dir and self.exception_prefixes is not None:
                    below = path + "/"
                    if not self.exc.exclusions or not any(
                        p.startswith(below) for p in self.exception_prefixes
                    ):
                        return _SKIP_DIR
                skip = True
        if err is not None:
            if skip and isinstance(err, PermissionError):
                return _SKIP_DIR
            raise err
        if skip:
            if here is not None:
                parents.append(here)
            return _DESCEND
        assert st is not None
        try:
            entry = self._stat(path, abspath, st)
        except (FileNotFoundError, NotADirectoryError):
            # Vanished while walking: fsutil turns this into SkipDir.
            return _SKIP_DIR if is_dir else _SKIP_REST
        # A directory skipped by the patterns is sent after all, before its first entry sent.
        for parent in parents:
            if not parent.called:
                self.out.append(self._stat(parent.path, parent.abspath, parent.st))
                parent.called = True
        self.out.append(entry)
        if here is not None:
            here.called = True
            parents.append(here)
        return _DESCEND


def _names(abspath: str) -> list[str]:
    return sorted(os.listdir(abspath))


def _resolve_root(root: str) -> str:
    """The directory walked: fsutil resolves the root's own symlinks first."""
    try:
        real = os.path.realpath(root, strict=True)
        if not stat.S_ISDIR(os.stat(real).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
    except OSError as err:
        raise DiffCopyError(f"cannot send {root}: {err.strerror}") from None
    return real


def walk(
    root: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    xattrs: bool = True,
    batch: int = 256,
) -> Generator[list[fsutil_pb2.Stat], None, None]:
    """The stats fsutil's ``Walk`` yields for ``root``, in lists of up to ``batch``.

    Blocking: iterate it in a worker thread. OSErrors other than entries vanishing propagate.
    """
    root = os.fspath(root)
    real = _resolve_root(root)
    includes: list[str] | None = list(include) if include else None
    if follow_paths:
        targets = follow_links(root, follow_paths)
        if targets is not None:
            includes = _dedupe([*(includes or []), *targets])
    walker = _Walker(
        PatternMatcher(includes) if includes else None,
        PatternMatcher(list(exclude)) if exclude else None,
        xattrs=xattrs,
    )

    stack: list[tuple[str, str, Iterator[str]]] = [(real, "", iter(_names(real)))]
    while stack:
        dir_abs, dir_rel, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        abspath = os.path.join(dir_abs, name)
        path = f"{dir_rel}/{name}" if dir_rel else name
        err: OSError | None = None
        st: os.stat_result | None = None
        try:
            st = os.lstat(abspath)
        except FileNotFoundError:
            continue
        except OSError as lstat_err:
            err = lstat_err
        children: list[str] = []
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                children = _names(abspath)
            except FileNotFoundError:
                continue
            except OSError as read_err:
                err = read_err
        action = walker.visit(path, abspath, st, err)
        if action == _SKIP_REST:
            stack.pop()
        elif action == _DESCEND and st is not None and stat.S_ISDIR(st.st_mode):
            stack.append((abspath, path, iter(children)))
        if len(walker.out) >= batch:
            yield walker.out
            walker.out = []
    if walker.out:
        yield walker.out
