"""Which entries a DiffCopy sends: fsutil's walker, with include/exclude patterns and follow paths.

Every expected listing here was produced by fsutil's own walker (BuildKit v0.11.6's vendored
copy) on the same tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llbkit.core.fs.sendpatterns import SenderError
from llbkit.core.fs.sync import sync_tree
from llbkit.core.session.diffcopy import DiffCopyError, receive_tree, send_tree
from llbkit.core.session.walker import follow_links, walk

from .helpers import run_pair, sync

ALL = [
    "README.md",
    "a",
    "a/b",
    "a/b/c.txt",
    "a/b/d.go",
    "a/e.txt",
    "a-b",
    "a.txt",
    "abs-link",
    "chain",
    "docs",
    "docs/sub",
    "docs/sub/y.md",
    "docs/x.md",
    "link-to-docs-x",
    "link-to-src",
    "node_modules",
    "node_modules/pkg",
    "node_modules/pkg/index.js",
    "sp ace",
    "sp ace/[x]",
    "src",
    "src/lib",
    "src/lib/util.go",
    "src/lib/util_test.go",
    "src/main.go",
]
SRC = ["src", "src/lib", "src/lib/util.go", "src/lib/util_test.go", "src/main.go"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for d in ("a/b", "docs/sub", "node_modules/pkg", "src/lib", "sp ace"):
        (root / d).mkdir(parents=True)
    for f in ALL:
        if "." in f.rsplit("/", 1)[-1] or f in ("a-b", "sp ace/[x]"):
            (root / f).write_text(f)
    os.symlink("src", root / "link-to-src")
    os.symlink("docs/x.md", root / "link-to-docs-x")
    os.symlink("/src/lib", root / "abs-link")  # absolute: taken inside the root
    os.symlink("link-to-src", root / "chain")
    return root


def listing(root: Path, **opts: list[str]) -> list[str]:
    return [s.path for batch in walk(root, batch=3, **opts) for s in batch]  # type: ignore[arg-type]


CASES = [
    ({}, ALL),
    ({"include": ["src"]}, SRC),
    ({"include": ["src/"]}, SRC),
    # a directory is sent when something below it is, and only then
    ({"include": ["**/*.go"]}, ["a", "a/b", "a/b/d.go", *SRC]),
    ({"include": ["a/*/c.txt"]}, ["a", "a/b", "a/b/c.txt"]),
    ({"include": ["**/sub/**"]}, ["docs", "docs/sub", "docs/sub/y.md"]),
    ({"include": ["src", "!src/lib"]}, ["src", "src/main.go"]),
    (
        {"include": ["a*"]},
        ["a", "a/b", "a/b/c.txt", "a/b/d.go", "a/e.txt", "a-b", "a.txt", "abs-link"],
    ),
    ({"include": ["sp ace/\\[x\\]"]}, ["sp ace", "sp ace/[x]"]),
    ({"include": ["/src"]}, []),
    ({"include": ["."]}, []),
    (
        {"exclude": ["node_modules", "**/*_test.go"]},
        [p for p in ALL if not p.startswith("node_modules") and not p.endswith("_test.go")],
    ),
    # an exception below an excluded directory brings that directory back
    ({"exclude": ["docs", "!docs/sub"]}, [p for p in ALL if p != "docs/x.md"]),
    ({"exclude": ["*"]}, []),
    ({"exclude": ["*", "!a/b/c.txt"]}, ["a", "a/b", "a/b/c.txt"]),
    (
        {"exclude": ["**", "!**/*.md"]},
        ["README.md", "docs", "docs/sub", "docs/sub/y.md", "docs/x.md"],
    ),
    ({"include": ["a/b"], "exclude": ["**/*.txt"]}, ["a", "a/b", "a/b/d.go"]),
    ({"include": ["a"], "exclude": ["a/b"]}, ["a", "a/e.txt"]),
    # follow paths: the named paths, and for each symlink on the way its target too
    ({"follow_paths": ["link-to-src"]}, ["link-to-src", *SRC]),
    ({"follow_paths": ["chain"]}, ["chain", "link-to-src", *SRC]),
    ({"follow_paths": ["abs-link"]}, ["abs-link", *SRC[:-1]]),
    ({"follow_paths": ["link-to-src/main.go"]}, ["link-to-src", "src", "src/main.go"]),
    (
        {"follow_paths": ["*-to-*"]},
        ["docs", "docs/x.md", "link-to-docs-x", "link-to-src", *SRC],
    ),
    (
        {"include": ["README.md"], "follow_paths": ["link-to-docs-x"]},
        ["README.md", "docs", "docs/x.md", "link-to-docs-x"],
    ),
    ({"follow_paths": ["."]}, ALL),  # the root itself: no filter at all
    ({"follow_paths": ["nonexistent"]}, []),
]


@pytest.mark.parametrize(("opts", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_walk_selects_what_fsutil_selects(
    tree: Path, opts: dict[str, list[str]], expected: list[str]
) -> None:
    assert listing(tree, **opts) == expected


def test_the_receiver_gets_exactly_the_selection(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    sync(tree, dest, include=["**/*.go", "README.md"], exclude=["**/*_test.go"])
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert got == [
        "README.md",
        "a",
        "a/b",
        "a/b/d.go",
        "src",
        "src/lib",
        "src/lib/util.go",
        "src/main.go",
    ]


def test_follow_links_dedupes_as_fsutil_does(tree: Path) -> None:
    assert follow_links(str(tree), ["chain", "src/lib"]) == ["chain", "link-to-src", "src"]
    assert follow_links(str(tree), ["a", "."]) is None


def test_a_root_that_is_a_symlink_is_walked_through(tree: Path, tmp_path: Path) -> None:
    os.symlink(tree, tmp_path / "via-link")
    assert listing(tmp_path / "via-link", include=["src"]) == SRC


def test_a_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiffCopyError, match=r"cannot send .*missing: No such file"):
        listing(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(DiffCopyError, match="Not a directory"):
        listing(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_an_unreadable_excluded_directory_is_skipped(tree: Path) -> None:
    (tree / "node_modules").chmod(0)
    try:
        assert "README.md" in listing(tree, exclude=["node_modules"])
        with pytest.raises(PermissionError):
            listing(tree)
    finally:
        (tree / "node_modules").chmod(0o755)


def mirrored(root: Path, dest: Path, **opts: list[str]) -> list[str]:
    sync_tree(root, dest, **opts)  # type: ignore[arg-type]
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))


@pytest.mark.parametrize(("opts", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_the_embedded_mirror_selects_what_fsutil_selects(
    tree: Path, tmp_path: Path, opts: dict[str, list[str]], expected: list[str]
) -> None:
    # The embedded client mirrors the context instead of streaming it: the same entries.
    assert mirrored(tree, tmp_path / "dest", **opts) == sorted(expected)


#: malformed patterns, refused as BuildKit v0.11.6's client refuses them: by patternmatcher's
#: New (Go 1.19's filepath.Match against "."), or, for what that lets through but its regexp
#: cannot compile, on the first path matched
REFUSED = [
    ({"follow_paths": ["[a"]}, "invalid includepatterns: []: syntax error in pattern"),
    ({"follow_paths": ["a*", "x["]}, "invalid includepatterns: []: syntax error in pattern"),
    ({"follow_paths": ["[-a]*"]}, "invalid includepatterns: []: syntax error in pattern"),
    ({"include": ["src", "[^"]}, "invalid includepatterns: [src [^]: syntax error in pattern"),
    ({"include": ["!"]}, 'invalid includepatterns: [!]: illegal exclusion pattern: "!"'),
    ({"exclude": ["a\\"]}, "invalid excludepatterns: [a\\]: syntax error in pattern"),
    ({"follow_paths": ["[z-a]*"]}, "failed to match includepatterns: syntax error in pattern"),
    ({"follow_paths": ["dir/*/["]}, "failed to match includepatterns: syntax error in pattern"),
    ({"exclude": ["[z-a]"]}, "failed to match excludepatterns: syntax error in pattern"),
]


@pytest.mark.parametrize(("opts", "message"), REFUSED, ids=[r[1][:20] for r in REFUSED])
def test_a_malformed_pattern_is_refused_in_fsutils_words(
    tree: Path, tmp_path: Path, opts: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(SenderError) as walked:
        listing(tree, **opts)
    assert str(walked.value) == message
    with pytest.raises(SenderError) as synced:
        sync_tree(tree, tmp_path / "dest", **opts)  # type: ignore[arg-type]
    assert str(synced.value) == message


def test_a_pattern_refused_only_when_matched_passes_an_empty_directory(tmp_path: Path) -> None:
    # patternmatcher compiles a pattern on its first match: nothing to match, nothing refused.
    assert listing(tmp_path, follow_paths=["[z-a]*"]) == []


def test_the_receiver_reports_a_refused_pattern_as_the_senders(tree: Path, tmp_path: Path) -> None:
    # What a daemon says when a client's walker refuses a follow path: BuildKit's words.
    sent, received = run_pair(
        lambda s: send_tree(s, tree, follow_paths=["a*", "x["]),
        lambda s: receive_tree(s, tmp_path / "dest"),
    )
    assert isinstance(sent, SenderError)
    refused = "invalid includepatterns: []: syntax error in pattern"
    assert str(received) == f"error from sender: {refused}"
