"""What fsutil's sender filters a directory by: include and exclude patterns, and follow paths
whose symlinks are resolved into more include patterns before walking.

Shared by the DiffCopy walker (a client sending over a session) and the embedded mirror, so both
send the same entries and refuse the same malformed patterns, in the words BuildKit's client
uses (a daemon puts ``error from sender:`` before them).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Sequence

from llbkit.core.errors import UserError
from llbkit.core.fs.iterative import SortedWalk
from llbkit.core.patterns import Pattern, PatternError, PatternMatcher, clean, filepath_match

__all__ = [
    "DESCEND",
    "SEND",
    "SKIP_DIR",
    "SKIP_REST",
    "SenderError",
    "SenderFilter",
    "SenderPatterns",
    "dedupe",
    "follow_links",
    "selected",
]

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


class SenderError(UserError):
    """A pattern fsutil's sender refuses, worded as it words it."""


def _go_list(items: Sequence[str]) -> str:
    """A Go string slice as ``%s`` prints it: ``[a b]``, ``[]`` when empty."""
    return "[" + " ".join(items) + "]"


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
    the error."""
    try:
        return filepath_match(pattern, name)
    except PatternError:
        return False


def dedupe(paths: Sequence[str]) -> list[str] | None:
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
    return dedupe(sorted(resolver.resolved))


# ---- the matchers ------------------------------------------------------------------------------


class SenderPatterns:
    """The include and exclude matchers fsutil's ``Walk`` builds for ``root`` (None: no filter
    of that kind); :class:`SenderError` for a pattern it refuses."""

    def __init__(
        self,
        root: str,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
    ) -> None:
        includes: list[str] | None = list(include)
        if follow_paths:
            targets = follow_links(root, follow_paths)
            if targets is not None:
                includes = dedupe([*(includes or []), *targets])
        self.include: PatternMatcher | None = None
        self.exclude: PatternMatcher | None = None
        if includes:
            try:
                self.include = PatternMatcher(includes, go_syntax=True)
            except PatternError as err:
                raise SenderError(f"invalid includepatterns: {_go_list(include)}: {err}") from None
        if exclude:
            try:
                self.exclude = PatternMatcher(list(exclude), go_syntax=True)
            except PatternError as err:
                raise SenderError(f"invalid excludepatterns: {_go_list(exclude)}: {err}") from None

    @staticmethod
    def checked(kind: str, match: Callable[..., T], *args: Any) -> T:
        """``match(*args)``, a pattern that cannot be compiled refused as fsutil refuses it
        while walking (``kind``: include or exclude)."""
        try:
            return match(*args)
        except PatternError as err:
            raise SenderError(f"failed to match {kind}patterns: {err}") from None


# ---- the walk's decisions ----------------------------------------------------------------------

#: characters that make an include/exclude pattern more than a plain path prefix
_PATTERN_CHARS = frozenset("*[]?^\\")

# What a walk does after an entry (the first three are what the walker returns to its loop).
DESCEND = 0  # go on (into the entry, if it is a readable directory), not sending it
SKIP_DIR = 1  # do not enter this directory
SKIP_REST = 2  # skip the rest of the current directory (Go's SkipDir returned for a file)
SEND = 3  # send the entry (and go on into it)


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


def _plain_prefixes(patterns: list[Pattern]) -> list[str] | None:
    """The patterns as directory prefixes, if none has a wildcard (then a directory nothing
    could match below is skipped whole)."""
    plain = [_without_trailing_glob(p) for p in patterns]
    if any(_PATTERN_CHARS.intersection(text) for text in plain):
        return None
    return [text + "/" for text in plain]


class _Dir:
    """A directory on the way down, kept while walking below it (only when filtering)."""

    __slots__ = ("called", "data", "exc", "inc", "path", "prefix")

    def __init__(self, path: str, data: object) -> None:
        self.path = path
        self.prefix = path + "/"
        self.data = data
        self.inc: list[bool] | None = None
        self.exc: list[bool] | None = None
        self.called = False


class SenderFilter:
    """fsutil's walk callback: for each entry, in walk order, whether it is sent, skipped or
    its directory not entered; a directory the patterns skip is sent after all, just before the
    first entry below it that is."""

    def __init__(self, patterns: SenderPatterns) -> None:
        self.inc = patterns.include
        self.exc = patterns.exclude
        self.parents: list[_Dir] = []
        self._here: _Dir | None = None
        self.include_prefixes = (
            _plain_prefixes([p for p in self.inc.patterns if not p.exclusion])
            if self.inc is not None
            else None
        )
        self.exception_prefixes = (
            _plain_prefixes([p for p in self.exc.patterns if p.exclusion])
            if self.exc is not None
            else None
        )

    def decide(self, path: str, is_dir: bool, data: object, err: OSError | None) -> int:
        """SEND, DESCEND (not sent) or SKIP_DIR for ``path``; ``data`` is handed back by
        :meth:`send` for a directory sent late. ``err`` (reading the entry) is raised unless
        the patterns skip the entry anyway."""
        parents = self.parents
        here = self._here = None
        if self.inc is not None or self.exc is not None:
            while parents and not path.startswith(parents[-1].prefix):
                parents.pop()
            if is_dir:
                here = self._here = _Dir(path, data)
        skip = False
        if self.inc is not None:
            above = parents[-1].inc if parents else None
            hit, info = SenderPatterns.checked("include", _match, self.inc, path, above)
            if here is not None:
                here.inc = info
            if not hit:
                if is_dir and self.include_prefixes is not None:
                    below = path + "/"
                    if not any(p.startswith(below) for p in self.include_prefixes):
                        return SKIP_DIR
                skip = True
        if self.exc is not None:
            above = parents[-1].exc if parents else None
            hit, info = SenderPatterns.checked("exclude", _match, self.exc, path, above)
            if here is not None:
                here.exc = info
            if hit:
                if is_dir and self.exception_prefixes is not None:
                    below = path + "/"
                    if not self.exc.exclusions or not any(
                        p.startswith(below) for p in self.exception_prefixes
                    ):
                        return SKIP_DIR
                skip = True
        if err is not None:
            if skip and isinstance(err, PermissionError):
                return SKIP_DIR
            raise err
        if skip:
            if here is not None:
                parents.append(here)
            return DESCEND
        return SEND

    def send(self) -> list[tuple[str, object]]:
        """The entry just decided SEND is being sent: the directories to send before it (path
        and data), which will not be sent again."""
        late = [(parent.path, parent.data) for parent in self.parents if not parent.called]
        for parent in self.parents:
            parent.called = True
        if self._here is not None:
            self._here.called = True
            self.parents.append(self._here)
        return late


def selected(root: str, patterns: SenderPatterns) -> set[str] | None:
    """Every path fsutil's sender would send from ``root`` (None: everything, no patterns)."""
    if patterns.include is None and patterns.exclude is None:
        return None
    out: set[str] = set()
    choose = SenderFilter(patterns)
    tree = SortedWalk(root, sorted(os.listdir(root)))
    for abspath, path in tree:
        err: OSError | None = None
        is_dir = False
        children: list[str] = []
        try:
            is_dir = stat.S_ISDIR(os.lstat(abspath).st_mode)
            if is_dir:
                children = sorted(os.listdir(abspath))
        except FileNotFoundError:
            continue
        except OSError as read_err:
            err = read_err
        action = choose.decide(path, is_dir, None, err)
        if action == SKIP_DIR:
            continue
        if action == SEND:
            out.update(p for p, _ in choose.send())
            out.add(path)
        if is_dir:
            tree.enter(abspath, path, children)
    return out
