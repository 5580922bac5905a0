"""Docker's pattern semantics, case by case."""

from __future__ import annotations

import pytest

from llbkit.core.patterns import (
    PatternError,
    PatternMatcher,
    clean,
    filepath_match,
    read_dockerignore,
)

CASES = [
    # (patterns, path, matched)
    (["*.go"], "main.go", True),
    (["*.go"], "cmd/main.go", False),  # * stays within one element
    (["**/*.go"], "cmd/main.go", True),
    (["**/*.go"], "main.go", True),  # ** may be zero directories
    (["**/*.go"], "a/b/c/x.go", True),
    (["**"], "anything/at/all", True),
    (["docs/**"], "docs/a/b.md", True),
    (["docs/**"], "docsx/a", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/y/c", False),
    (["**/node_modules"], "web/node_modules/x/y.js", True),  # a matching parent matches
    (["node_modules"], "node_modules/x/y", True),
    (["node_modules"], "web/node_modules", False),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    (["[a-c]*"], "beta", True),
    (["[a-c]*"], "delta", False),
    (["[^a-c]*"], "delta", True),
    (["\\*.txt"], "*.txt", True),
    (["\\*.txt"], "a.txt", False),
    (["a+b(c).txt"], "a+b(c).txt", True),  # regex metacharacters are literal
    (["./foo"], "foo", True),
    (["foo/"], "foo/bar", True),
    (["*", "!README.md"], "README.md", False),  # an exception after a broad pattern
    (["*", "!README.md"], "main.go", True),
    (["!README.md", "*"], "README.md", True),  # the last matching pattern wins
    (["docs", "!docs/keep.md"], "docs/keep.md", False),
    (["docs", "!docs/keep.md"], "docs/drop.md", True),
    (["*.md", "!a*.md", "ab.md"], "ab.md", True),
    (["*.md", "!a*.md", "ab.md"], "ac.md", False),
    ([], "x", False),
    (["  ", "x"], "x", True),  # blank patterns are skipped
]


@pytest.mark.parametrize(("patterns", "path", "expected"), CASES)
def test_docker_semantics(patterns, path, expected):
    assert PatternMatcher(patterns).matches(path) is expected


def test_exclusions_flag():
    assert not PatternMatcher(["*.go"]).exclusions
    assert PatternMatcher(["*", "!keep"]).exclusions


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("!", "illegal exclusion"), ("[abc", "never closed"), ("a\\", "trailing backslash")],
)
def test_bad_patterns_are_named(pattern, why):
    with pytest.raises(PatternError, match=why):
        PatternMatcher([pattern])


def test_clean_is_gos():
    assert clean("//a//b/./c/..") == "/a/b"
    assert clean("") == "."
    assert clean("./x/") == "x"


def test_dockerignore_reader():
    text = (
        "\ufeff# a comment\n\n  *.log  \n!/keep.log\n/build/\n ! spaced \n#!not-an-exception\n/\n"
    )
    assert read_dockerignore(text) == ["*.log", "!keep.log", "build", "!spaced", "/"]


def test_many_paths_are_cheap():
    matcher = PatternMatcher(["**/*.tmp", "node_modules", "!node_modules/keep", "build/**"])
    paths = [f"src/pkg{i % 50}/file{i}.{'tmp' if i % 7 == 0 else 'go'}" for i in range(5000)]
    assert sum(matcher.matches(p) for p in paths) == len([i for i in range(5000) if i % 7 == 0])


#: Go 1.19's filepath.Match (BuildKit v0.11.6's client is built with it): (pattern, name,
#: answer), "bad" for ErrBadPattern. A malformed part after the first mismatching chunk goes
#: unnoticed, so "dir/*/[" passes where "x[" does not.
GO_FILEPATH_MATCH = [
    ("a*", "abc", True),
    ("a*", "a/b", False),
    ("*", ".", True),
    ("[z-a]*", ".", False),  # a reversed range is no error here (the regexp refuses it)
    ("[^a]", "b", True),
    ("[!a]", "!", True),
    ("a\\*", "a*", True),
    ("dir/*/[", ".", False),
    ("a*[", ".", False),
    ("[a", ".", "bad"),
    ("x[", ".", "bad"),
    ("[-a]*", ".", "bad"),
    ("[a-]", "a", "bad"),
    ("[]a]", "a", "bad"),
    ("[^", ".", "bad"),
    ("a\\", "a", "bad"),
    ("*x[", ".", "bad"),
    ("dir/x/[", ".", "bad"),
]


@pytest.mark.parametrize(("pattern", "name", "answer"), GO_FILEPATH_MATCH)
def test_filepath_match_is_go_1_19s(pattern: str, name: str, answer: bool | str) -> None:
    if answer == "bad":
        with pytest.raises(PatternError, match="syntax error in pattern"):
            filepath_match(pattern, name)
    else:
        assert filepath_match(pattern, name) is answer


def test_go_syntax_checks_as_patternmatcher_new_and_defers_what_it_cannot_compile() -> None:
    with pytest.raises(PatternError, match=r"^syntax error in pattern$"):
        PatternMatcher(["ok", "x["], go_syntax=True)
    matcher = PatternMatcher(["[z-a]*"], go_syntax=True)  # New lets it through
    with pytest.raises(PatternError, match=r"^syntax error in pattern$"):
        matcher.matches("a")
    with pytest.raises(PatternError, match="never closed"):
        PatternMatcher(["dir/*/["])  # without go_syntax: refused at once, as before
