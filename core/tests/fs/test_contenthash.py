"""Content checksums: what changes them, what does not, and that they travel between machines."""

from __future__ import annotations

import os
import shutil

import pytest

from llbkit.core.fs.contenthash import ContentHasher, PathNotFoundError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "a"
    (root / "src/pkg").mkdir(parents=True)
    (root / "src/main.go").write_text("package main\n")
    (root / "src/pkg/util.go").write_text("package pkg\n")
    (root / "README.md").write_text("hello\n")
    os.symlink("src/main.go", root / "main-link")
    return root


def check(root, path, **kw):
    return ContentHasher(root).checksum(path, **kw)


def test_same_content_elsewhere_gives_the_same_checksum(tree, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tree, copy, symlinks=True)
    os.utime(copy / "src/main.go", (1, 1))  # timestamps are not content
    assert check(copy, "/src") == check(tree, "/src")
    assert check(copy, "/") == check(tree, "/")


def test_what_changes_a_checksum(tree):
    before = check(tree, "/src")
    (tree / "src/main.go").write_text("package main // changed\n")
    after_content = check(tree, "/src")
    os.chmod(tree / "src/main.go", 0o755)
    after_mode = check(tree, "/src")
    (tree / "src/new.go").write_text("")
    after_new = check(tree, "/src")
    assert len({before, after_content, after_mode, after_new}) == 4


def test_unrelated_changes_leave_a_selection_alone(tree):
    before = check(tree, "/src/pkg")
    (tree / "README.md").write_text("changed\n")
    (tree / "src/main.go").write_text("changed\n")
    assert check(tree, "/src/pkg") == before


def test_symlinks_followed_or_not(tree):
    followed = check(tree, "/main-link")
    assert followed == check(tree, "/src/main.go")
    assert check(tree, "/main-link", follow_links=False) != followed


def test_wildcards_cover_every_match(tree):
    both = check(tree, "/src/*.go", wildcard=True)
    (tree / "src/other.go").write_text("")
    assert check(tree, "/src/*.go", wildcard=True) != both
    hasher = ContentHasher(tree)
    assert hasher.glob("/src/*.go") == ["src/main.go", "src/other.go"]
    assert hasher.glob("/*/pkg/u*") == ["src/pkg/util.go"]
    assert hasher.glob("/nothing/*") == []
    assert check(tree, "/nothing*", wildcard=True) == check(tree, "/zzz*", wildcard=True)


def test_missing_path_is_named(tree):
    with pytest.raises(PathNotFoundError, match=r"/src/gone\.go: not found"):
        check(tree, "/src/gone.go")


def test_stat_cache_skips_reading_unchanged_files(tree):
    cache = {}
    first = ContentHasher(tree, stat_cache=cache).checksum("/src")
    assert set(cache) == {"src/main.go", "src/pkg/util.go"}
    key = "src/main.go"
    cache[key] = (
        *cache[key][:4],
        "0" * 64,
    )  # a lie the hasher must believe while stat is unchanged
    assert ContentHasher(tree, stat_cache=cache).checksum("/src") != first
    (tree / key).write_text("package main\n")  # same content, new stat: re-read, truth restored
    assert ContentHasher(tree, stat_cache=cache).checksum("/src") == first


def test_filter_leaves_paths_out(tree):
    filtered = ContentHasher(tree, keep=lambda rel: not rel.endswith(".md")).checksum("/")
    (tree / "README.md").write_text("changed\n")
    assert ContentHasher(tree, keep=lambda rel: not rel.endswith(".md")).checksum("/") == filtered


def test_user_xattrs_count(tree):
    target = tree / "README.md"
    try:
        os.setxattr(target, "user.llbkit", b"1")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    with_attr = check(tree, "/README.md")
    os.removexattr(target, "user.llbkit")
    assert check(tree, "/README.md") != with_attr
