"""COPY/ADD wildcards read as Go's path.Match reads them (BuildKit's matcher), not fnmatch."""

from __future__ import annotations

import fnmatch

import pytest

from llbkit.core.fs.gomatch import BAD_PATTERN, BadPattern, has_wildcards, match

MATCHES = [
    # plain text, stars and question marks; neither crosses a '/'
    ("abc", "abc", True),
    ("abc", "abd", False),
    ("*", "", True),
    ("*", "anything", True),
    ("*.txt", "a.txt", True),
    ("*.txt", "a.txt.bak", False),
    ("x*y*z", "xaaybbz", True),
    ("x*y*z", "xaaybbzq", False),
    ("a*", "a/b", False),
    ("a?c", "a/c", False),
    ("*/b", "dir/b", True),
    ("*/b", "d/i/b", False),
    ("a?c", "aλc", True),
    ("a??c", "aλc", False),
    ("**z", "zzz", True),
    # classes: ^ negates, ! is a member like any other
    ("[ab]x", "bx", True),
    ("[ab]x", "cx", False),
    ("[^ab]x", "cx", True),
    ("[^ab]x", "ax", False),
    ("[!a]*.txt", "a.txt", True),
    ("[!a]*.txt", "b.txt", False),
    ("[!a]*.txt", "!.txt", True),
    ("[^a]*.txt", "b.txt", True),
    ("[^a]*.txt", "a.txt", False),
    ("[^b]", "/", True),  # a class is not kept from '/' as * and ? are
    # ranges, several in one class, code points beyond ASCII
    ("[a-c]1", "b1", True),
    ("[a-c]1", "d1", False),
    ("[^a-c]1", "d1", True),
    ("[a-cx-z]", "y", True),
    ("[a-cx-z]", "m", False),
    ("[z-a]", "m", False),  # a reversed range is empty, not an error
    ("[\u03b1-\u03c9]", "\u03bb", True),  # Greek alpha to omega holds lambda
    # escapes, outside a class and inside one
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("\\[x]", "[x]", True),
    ("[\\]]", "]", True),
    ("[\\-]", "-", True),
    ("[a\\-]", "-", True),
    ("[a\\-]", "b", False),
    ("[\\^a]", "^", True),
    ("[*]", "*", True),
    ("[*]", "x", False),
]

MALFORMED = [
    "[",  # never closed
    "[a",
    "[^",
    "[^ab",
    "x[",
    "[]",  # empty
    "[^]",
    "[]a]",  # ']' first is not a member (escape it)
    "[-a]",  # '-' must be escaped at either end
    "[a-]",
    "[a-b-c]",
    "[a\\",
    "\\",  # a trailing escape
    "ok*\\",
]


@pytest.mark.parametrize(("pattern", "name", "expected"), MATCHES)
def test_match_as_go(pattern: str, name: str, expected: bool) -> None:
    assert match(pattern, name) is expected


def test_differs_from_fnmatch_where_buildkit_does() -> None:
    assert fnmatch.fnmatchcase("b.txt", "[!a]*.txt") and not match("[!a]*.txt", "b.txt")
    assert not fnmatch.fnmatchcase("b.txt", "[^a]*.txt") and match("[^a]*.txt", "b.txt")


@pytest.mark.parametrize("pattern", MALFORMED)
def test_malformed_is_an_error_whatever_the_name(pattern: str) -> None:
    for name in ("", "a", "zzz", "[", "]"):
        with pytest.raises(BadPattern, match=BAD_PATTERN):
            match(pattern, name)


@pytest.mark.parametrize(
    ("part", "expected"),
    [("a.txt", False), ("*", True), ("a?", True), ("[x", True), ("a\\*", False), ("\\\\*", True)],
)
def test_has_wildcards(part: str, expected: bool) -> None:
    assert has_wildcards(part) is expected
