"""Wildcards as Go's ``path.Match`` reads them, which is what BuildKit matches COPY/ADD sources
and file-op paths with: ``[^a]`` negates (``[!a]`` is the class of ``!`` and ``a``), ``\\``
escapes, and a malformed pattern is an error whatever name it is matched against."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["BAD_PATTERN", "BadPattern", "has_wildcards", "match"]

#: Go's ``path.ErrBadPattern`` text, the words BuildKit's error ends with
BAD_PATTERN = "syntax error in pattern"


class BadPattern(ValueError):
    """A pattern Go's ``path.Match`` refuses."""

    def __init__(self) -> None:
        super().__init__(BAD_PATTERN)


@dataclass(frozen=True)
class _Class:
    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def matches(self, char: str) -> bool:
        inside = any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated


_STAR = "*"
_ANY = "?"
#: a token: _STAR, _ANY, a class, or a one-character literal wrapped in a tuple
_Token = str | _Class | tuple[str]


def has_wildcards(part: str) -> bool:
    """Whether ``part`` has an unescaped ``*``, ``?`` or ``[`` (BuildKit's test for where a
    pattern's literal prefix ends)."""
    i = 0
    while i < len(part):
        if part[i] == "\\":
            i += 2
            continue
        if part[i] in "*?[":
            return True
        i += 1
    return False


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a class (maybe escaped) at ``i``, and where the class goes on."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise BadPattern
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPattern
    if i + 1 >= len(pattern):  # the class is never closed
        raise BadPattern
    return pattern[i], i + 1


def _parse_class(pattern: str, i: int) -> tuple[_Class, int]:
    """The class opened by the ``[`` before ``i``, and the index after its ``]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i < len(pattern) and pattern[i] == "]" and ranges:
            return _Class(negated, tuple(ranges)), i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        ranges.append((lo, hi))


@lru_cache(maxsize=512)
def _compile(pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
        elif char == "?":
            tokens.append(_ANY)
        elif char == "[":
            found, i = _parse_class(pattern, i)
            tokens.append(found)
        elif char == "\\":
            if i >= len(pattern):
                raise BadPattern
            tokens.append((pattern[i],))
            i += 1
        else:
            tokens.append((char,))
    return tuple(tokens)


def _one(token: _Token, char: str) -> bool:
    if token == _ANY:
        return char != "/"
    if isinstance(token, _Class):
        return token.matches(char)
    return isinstance(token, tuple) and token[0] == char


def match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` as Go's ``path.Match`` says (``*`` and ``?`` never
    match ``/``); :class:`BadPattern` for a malformed pattern."""
    tokens = _compile(pattern)
    t = n = 0
    star, resume = -1, 0
    while n < len(name):
        if t < len(tokens) and tokens[t] == _STAR:
            star, resume = t, n
            t += 1
        elif t < len(tokens) and _one(tokens[t], name[n]):
            t += 1
            n += 1
        elif star >= 0 and name[resume] != "/":
            resume += 1
            t, n = star + 1, resume
        else:
            return False
    while t < len(tokens) and tokens[t] == _STAR:
        t += 1
    return t == len(tokens)
