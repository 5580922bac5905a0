"""Docker's path patterns: ``.dockerignore``, local-source include/exclude, ``COPY --exclude``.

The same rules as moby's patternmatcher, so a context sends and skips exactly the files Docker
would: ``*`` and ``?`` stay within one path element, ``**`` spans any number of them, ``[...]``
classes and ``\\`` escapes work, the last matching pattern wins, ``!`` patterns re-include, and a
pattern that matches a directory matches everything beneath it.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Sequence

from llbkit.core.errors import UserError

__all__ = [
    "BAD_PATTERN",
    "Pattern",
    "PatternError",
    "PatternMatcher",
    "clean",
    "filepath_match",
    "read_dockerignore",
]

#: Go's ``filepath.ErrBadPattern`` text, the words fsutil's sender refuses a pattern with
BAD_PATTERN = "syntax error in pattern"

_ESCAPED = frozenset(".+()|{}$")
#: patterns with this many unbounded wildcards are matched by simulation, not by re
_SIMULATED_FROM = 3


class PatternError(UserError):
    """A pattern Docker would reject (an unterminated ``[``, a lone ``!``...)."""


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` for slash paths (``posixpath.normpath`` keeps a leading ``//``)."""
    cleaned = posixpath.normpath(path) if path else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _check_syntax(pattern: str) -> None:
    """Refuse what Go's ``filepath.Match`` calls a bad pattern."""
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                raise PatternError(f"invalid pattern {pattern!r}: trailing backslash")
            i += 2
            continue
        if char == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            start = i
            while i < n and (pattern[i] != "]" or i == start):
                if pattern[i] == "\\":
                    i += 1
                i += 1
            if i >= n:
                raise PatternError(f"invalid pattern {pattern!r}: '[' is never closed")
        i += 1


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Go's ``scanChunk``: leading stars, then the literal run up to the next star outside a
    class."""
    rest = pattern.lstrip("*")
    star = len(rest) != len(pattern)
    i, in_class = 0, False
    while i < len(rest):
        char = rest[i]
        if char == "\\":
            i += 1 if i + 1 < len(rest) else 0
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "*" and not in_class:
            break
        i += 1
    return star, rest[:i], rest[i:]


def _class_char(chunk: str, i: int) -> tuple[str, int]:
    """One (maybe escaped) character of a class; Go refuses a class that ends after it."""
    if i >= len(chunk) or chunk[i] in "-]":
        raise PatternError(BAD_PATTERN)
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise PatternError(BAD_PATTERN)
    if i + 1 >= len(chunk):
        raise PatternError(BAD_PATTERN)
    return chunk[i], i + 1


def _match_chunk(chunk: str, name: str) -> str | None:
    """Go's ``matchChunk``: what is left of ``name`` after ``chunk`` matched its start (None
    if it did not). The whole chunk is read even after a mismatch, so its syntax is checked."""
    failed, i = False, 0
    while i < len(chunk):
        failed = failed or not name
        char = chunk[i]
        if char == "[":
            got = ""
            if not failed:
                got, name = name[0], name[1:]
            i += 1
            negated = i < len(chunk) and chunk[i] == "^"
            i += negated
            inside, ranges = False, 0
            while not (i < len(chunk) and chunk[i] == "]" and ranges):
                lo, i = _class_char(chunk, i)
                hi = lo
                if chunk[i] == "-":
                    hi, i = _class_char(chunk, i + 1)
                inside = inside or (got != "" and lo <= got <= hi)
                ranges += 1
            i += 1
            failed = failed or inside == negated
            continue
        if char == "\\":
            i += 1
            if i >= len(chunk):
                raise PatternError(BAD_PATTERN)
        if not failed:
            failed = name[0] == "/" if char == "?" else chunk[i] != name[0]
            name = name[1:]
        i += 1
    return None if failed else name


def _after_star(chunk: str, name: str, *, last: bool) -> str | None:
    """Where ``chunk`` matches after a star skipped some of ``name`` (never a ``/``); the last
    chunk must end the name."""
    for i, char in enumerate(name):
        if char == "/":
            return None
        rest = _match_chunk(chunk, name[i + 1 :])
        if rest is not None and not (last and rest):
            return rest
    return None


def filepath_match(pattern: str, name: str) -> bool:
    """Go 1.19's ``filepath.Match`` (what BuildKit v0.11.6's client is built with): unlike
    ``path.Match``, a malformed part after the first mismatch goes unnoticed, so
    ``dir/*/[`` passes where ``x[`` does not. :class:`PatternError` for a malformed pattern."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing star takes the rest of one element
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            rest = _after_star(chunk, name, last=not pattern)
            if rest is not None:
                name = rest
                continue
        return False
    return not name


def _translate(text: str, i: int) -> tuple[str, int, bool]:
    """One element of a pattern as regex: (piece, characters used, whether it is a wildcard)."""
    char = text[i]
    if char == "*":
        return "[^/]*", 1, True
    if char == "?":
        return "[^/]", 1, True
    if char in _ESCAPED:
        return "\\" + char, 1, False
    if char == "\\":
        if i + 1 < len(text):
            return "\\" + text[i + 1], 2, True
        return "\\\\", 1, False
    return char, 1, char in "[]"


#: one element of a pattern for :func:`_simulate`: ``lit`` (a character), ``one`` (``?``),
#: ``char`` (a class, as a one-character regex), ``star`` (``*``), ``any`` (a final ``**``),
#: ``dirs`` (``**/``: nothing, or anything ending in ``/``)
_Step = tuple[str, "str | re.Pattern[str] | None"]


def _class_end(text: str, i: int) -> int:
    """The index after the ``]`` closing the class that opens at ``text[i]``."""
    i += 1
    if i < len(text) and text[i] == "^":
        i += 1
    start = i
    while i < len(text) and (text[i] != "]" or i == start):
        if text[i] == "\\":
            i += 1
        i += 1
    return min(i + 1, len(text))


def _step(text: str, i: int) -> _Step:
    char = text[i]
    if char == "*":
        return ("star", None)
    if char == "?":
        return ("one", None)
    if char == "\\" and i + 1 < len(text):
        return ("lit", text[i + 1])
    return ("lit", char)


def _compiled_classes(steps: list[_Step]) -> list[_Step] | None:
    """``steps`` with each class compiled; ``None`` (match with re) where re reads one
    differently on its own than inside the whole pattern."""
    done: list[_Step] = []
    for kind, value in steps:
        if kind == "char" and isinstance(value, str):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # "[[]": as in the whole
                    done.append((kind, re.compile(value, re.DOTALL)))
            except re.error:
                return None
        else:
            done.append((kind, value))
    return done


def _simulate(steps: list[_Step], path: str) -> bool:
    """Whether ``path`` matches ``steps`` whole: every position of the pattern the path may
    have reached is kept at once (a state is a step's index, and whether a ``dirs`` step has
    been entered), so the time is linear in the path for any pattern."""
    end = len(steps)

    def closure(states: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
        pending, found = list(states), set(states)
        while pending:
            at, inside = pending.pop()
            if at == end:
                continue
            kind = steps[at][0]
            # A wildcard may match nothing; "**/" is left only after a "/" once entered.
            if kind in ("star", "any") or (kind == "dirs" and not inside):
                for state in ((at + 1, False), (at, True)):
                    if state not in found:
                        found.add(state)
                        pending.append(state)
        return found

    states = closure({(0, False)})
    for char in path:
        following: set[tuple[int, bool]] = set()
        for at, inside in states:
            if at == end:
                continue
            kind, value = steps[at]
            if kind == "lit":
                if char == value:
                    following.add((at + 1, False))
            elif kind == "one":
                if char != "/":
                    following.add((at + 1, False))
            elif kind == "char":
                assert isinstance(value, re.Pattern)
                if value.fullmatch(char):
                    following.add((at + 1, False))
            elif inside and kind == "star":
                if char != "/":
                    following.add((at, True))
            elif inside and kind == "any":
                following.add((at, True))
            elif inside:  # dirs: anything, left after a "/"
                following.add((at, True))
                if char == "/":
                    following.add((at + 1, False))
        if not following:
            return False
        states = closure(following)
    return (end, False) in states


class Pattern:
    """One cleaned pattern; ``exclusion`` for a ``!`` pattern that re-includes.

    A plain class, not a dataclass: the patterns module is on a daemon client's start path,
    where importing ``dataclasses`` (and ``inspect`` with it) costs more than the build's
    own work."""

    __slots__ = (
        "_error",
        "_kind",
        "_regex",
        "_steps",
        "_value",
        "deferred",
        "exclusion",
        "parts",
        "text",
    )

    def __init__(self, text: str, exclusion: bool = False, *, deferred: bool = False) -> None:
        self.text = text
        self.exclusion = exclusion
        #: refuse a pattern that cannot be compiled on its first match, not when made
        self.deferred = deferred
        self.parts = len(text.split("/"))
        self._kind = ""
        self._value = ""
        self._regex: re.Pattern[str] | None = None
        self._steps: list[_Step] | None = None
        self._error: PatternError | None = None
        try:
            self._compile()
        except PatternError:
            if not self.deferred:
                raise
            # patternmatcher compiles on first use and then says only this.
            self._error = PatternError(BAD_PATTERN)

    def __repr__(self) -> str:
        return f"Pattern(text={self.text!r}, exclusion={self.exclusion!r}, kind={self._kind!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return (self.text, self.exclusion, self.deferred) == (
            other.text,
            other.exclusion,
            other.deferred,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as before

    def _compile(self) -> None:
        text, out, kind, i = self.text, ["^"], "exact", 0
        steps: list[_Step] = []
        while i < len(text):
            if text.startswith("**", i):
                at_start = i == 0
                i += 3 if text[i + 2 : i + 3] == "/" else 2
                if i < len(text):
                    out.append("(.*/)?")
                    steps.append(("dirs", None))
                    kind = "regex"
                elif kind == "exact":
                    kind = "prefix"
                else:
                    out.append(".*")
                    steps.append(("any", None))
                    kind = "regex"
                if at_start:
                    kind = "suffix"  # a leading "**": Docker matches the rest as a suffix
                continue
            if text[i] == "[":
                end = _class_end(text, i)
                pieces = []
                while i < end:
                    piece, used, _ = _translate(text, i)
                    pieces.append(piece)
                    i += used
                out.extend(pieces)
                steps.append(("char", "".join(pieces)))  # compiled only if simulated
                kind = "regex"
                continue
            piece, used, wild = _translate(text, i)
            out.append(piece)
            steps.append(_step(text, i))
            i += used
            if wild:
                kind = "regex"
        # Python's re backtracks: several unbounded wildcards (``*a*a*a*c``) take exponential
        # time on a long name, where Go's regexp is linear. Those are matched by simulating
        # all positions at once (linear) instead.
        if sum(kind_ in ("star", "any", "dirs") for kind_, _ in steps) >= _SIMULATED_FROM:
            self._steps = _compiled_classes(steps)
        self._kind = kind
        if kind == "prefix":
            self._value = text[:-2]
        elif kind == "suffix":
            self._value = text[2:]
        elif kind == "regex":
            try:
                self._regex = re.compile("".join(out) + "$")
            except re.error as err:
                raise PatternError(f"invalid pattern {self.text!r}: {err}") from None

    def match(self, path: str) -> bool:
        """Whether ``path`` (clean, slash-separated, relative) matches this pattern itself."""
        if self._error is not None:
            raise self._error
        if self._kind == "exact":
            return path == self.text
        if self._kind == "prefix":
            return path.startswith(self._value)
        if self._kind == "suffix":
            suffix = self._value
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        if self._steps is not None:
            return _simulate(self._steps, path)
        assert self._regex is not None
        return self._regex.match(path) is not None


class PatternMatcher:
    """An ordered list of patterns, applied as Docker applies them."""

    def __init__(self, patterns: Sequence[str], *, go_syntax: bool = False) -> None:
        """``go_syntax``: check each pattern as patternmatcher's ``New`` does (Go's
        ``filepath.Match`` against ``.``) and leave what it lets through but cannot compile to
        the first match, both in Go's words: what fsutil's sender reports."""
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                text = text[1:]
            if go_syntax:
                filepath_match(text, ".")
            else:
                _check_syntax(text)
            self.patterns.append(Pattern(text, exclusion, deferred=go_syntax))

    @property
    def exclusions(self) -> bool:
        """Whether any ``!`` pattern exists (then excluded directories must still be walked)."""
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Docker's ``MatchesOrParentMatches``: the last pattern matching ``path`` or one of
        its parent directories decides."""
        path = clean(path)
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                hit = any(pattern.match("/".join(parents[: i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched


def read_dockerignore(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file, cleaned as Docker reads them."""
    patterns = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns
