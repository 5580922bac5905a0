"""LLB graphs of file, merge and diff ops whose trees are compared with BuildKit's.

Each case is a function of the context state (``local://context``) returning the state to build.
``scripts/gen_tree_vectors.py`` records what BuildKit v0.11.6 builds from each into
``tests/vectors/trees/``; ``test_trees.py`` checks llbkit builds the same trees.
"""

from __future__ import annotations

from collections.abc import Callable

from llbkit.sdk import llb

T = 1_500_000_000 * 10**9  # a fixed timestamp (ns)
Case = Callable[[llb.State], llb.State]


def passwd_base() -> llb.State:
    """A tree with /etc/passwd and /etc/group, for owners by name."""
    return llb.scratch().file(
        llb.mkdir("/etc", 0o755)
        .mkfile(
            "/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nalice:x:1234:2345::/:/bin/sh\n"
        )
        .mkfile("/etc/group", 0o644, b"root:x:0:\nstaff:x:2345:\nwheel:x:777:\n")
    )


def mkdir_mkfile(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.mkdir("/a/b/c", 0o750, make_parents=True, owner="10:20", timestamp=T)
        .mkdir("/a/plain", 0o700)
        .mkfile("/a/b/c/file", 0o640, b"data\n", owner="30:40", timestamp=T)
        .mkfile("/top", 0o4755, b"#!/bin/sh\n")
        .mkfile("/empty", 0o600, b"")
    )


def rm_variants(ctx: llb.State) -> llb.State:
    base = llb.scratch().file(
        llb.mkdir("/x/y", 0o755, make_parents=True)
        .mkfile("/x/y/1.txt", 0o644, b"1")
        .mkfile("/x/y/2.txt", 0o644, b"2")
        .mkfile("/x/y/keep.md", 0o644, b"k")
        .mkfile("/x/z", 0o644, b"z")
    )
    return base.file(
        llb.rm("/x/y/*.txt", allow_wildcard=True)
        .rm("/nothing-here", allow_not_found=True)
        .rm("/x/z")
    )


def copy_basic(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.copy(ctx, "/dir", "/as-dir")
        .copy(ctx, "/dir", "/contents", copy_dir_contents=True, create_dest_path=True)
        .copy(ctx, "/dir/a.txt", "/renamed.txt")
        .copy(ctx, "/dir/a.txt", "/into/", create_dest_path=True)
        .copy(ctx, "/exec.sh", "/exec.sh")
    )


def copy_wildcards(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.copy(ctx, "/dir/*.txt", "/txt/", allow_wildcard=True, create_dest_path=True)
        .copy(ctx, "/dir/*", "/all/", allow_wildcard=True, create_dest_path=True)
        .copy(
            ctx,
            "/nomatch*",
            "/none/",
            allow_wildcard=True,
            allow_empty_wildcard=True,
            create_dest_path=True,
        )
    )


def copy_links(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.copy(ctx, "/link-to-file", "/kept-link")
        .copy(ctx, "/link-to-file", "/followed", follow_symlinks=True)
        .copy(ctx, "/link-to-dir", "/followed-dir", follow_symlinks=True)
        .copy(ctx, "/abs-link/c.txt", "/through-abs.txt", follow_symlinks=True)
        .copy(ctx, "/escaping-link", "/escaping-kept")
        .copy(ctx, "/hard1", "/h/", create_dest_path=True)
        .copy(ctx, "/hard2", "/h/", create_dest_path=True)
    )


def copy_hardlinks_tree(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.copy(ctx, "/", "/ctx/", create_dest_path=True, include_patterns=["hard*", "dir/sub"])
    )


def copy_mode_owner_time(ctx: llb.State) -> llb.State:
    return passwd_base().file(
        llb.copy(ctx, "/dir", "/by-id", owner="1000:1000")
        .copy(ctx, "/dir/a.txt", "/by-name.txt", owner="alice:staff")
        .copy(ctx, "/dir/b.md", "/user-only.md", owner="alice")
        .copy(ctx, "/exec.sh", "/mode.sh", mode=0o600)
        .copy(ctx, "/dir/sub", "/stamped", timestamp=T)
    )


def copy_patterns(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.copy(ctx, "/dir", "/inc", include_patterns=["*.txt", "sub"]).copy(
            ctx, "/dir", "/exc", exclude_patterns=["*.md", "sub/c.txt"]
        )
    )


def copy_unpack(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.mkdir("/u", 0o755)
        .copy(ctx, "/arch/plain.tar", "/u/plain", attempt_unpack=True, create_dest_path=True)
        .copy(ctx, "/arch/zipped.tar.gz", "/u/gz", attempt_unpack=True, create_dest_path=True)
        .copy(ctx, "/arch/zipped.tar.bz2", "/u/bz2", attempt_unpack=True, create_dest_path=True)
        .copy(ctx, "/arch/zipped.tar.xz", "/u/xz", attempt_unpack=True, create_dest_path=True)
        .copy(
            ctx, "/arch/not-an-archive.tar", "/u/text/", attempt_unpack=True, create_dest_path=True
        )
        .copy(ctx, "/arch/plain.tar", "/u/kept.tar")
    )


def copy_into_symlinked_dest(ctx: llb.State) -> llb.State:
    base = llb.scratch().file(llb.mkdir("/real", 0o755).copy(ctx, "/link-to-dir", "/alias"))
    return base.file(
        llb.mkdir("/real/dir", 0o755)
        .copy(ctx, "/dir/a.txt", "/real/dir/a.txt")
        .copy(ctx, "/exec.sh", "/../../outside.sh")
    )


def merge_layers(ctx: llb.State) -> llb.State:
    a = llb.scratch().file(
        llb.mkdir("/shared", 0o755)
        .mkfile("/shared/from-a", 0o644, b"a")
        .mkfile("/conflict", 0o644, b"a wins? no")
        .mkfile("/only-a", 0o600, b"a")
    )
    b = llb.scratch().file(
        llb.mkdir("/shared", 0o700)
        .mkfile("/shared/from-b", 0o644, b"b")
        .mkfile("/conflict", 0o644, b"b wins")
    )
    c = llb.scratch().file(llb.copy(ctx, "/dir", "/dir"))
    return llb.merge([a, b, c])


def merge_with_deletions(ctx: llb.State) -> llb.State:
    base = llb.scratch().file(
        llb.mkdir("/d", 0o755)
        .mkfile("/d/keep", 0o644, b"k")
        .mkfile("/d/gone", 0o644, b"g")
        .mkfile("/f", 0o644, b"f")
    )
    removed = base.file(llb.rm("/d/gone").rm("/f"))
    other = llb.scratch().file(llb.mkfile("/other", 0o644, b"o"))
    return llb.merge([other, removed])


def diff_on_top(ctx: llb.State) -> llb.State:
    base = llb.scratch().file(
        llb.mkdir("/d", 0o755).mkfile("/d/old", 0o644, b"old").mkfile("/stay", 0o644, b"s")
    )
    changed = base.file(llb.mkfile("/d/new", 0o644, b"new").mkfile("/stay", 0o600, b"s2"))
    return llb.diff(base, changed)


def diff_with_deletion_merged(ctx: llb.State) -> llb.State:
    base = llb.scratch().file(
        llb.mkdir("/d", 0o755).mkfile("/d/a", 0o644, b"a").mkfile("/d/b", 0o644, b"b")
    )
    changed = base.file(llb.rm("/d/a").mkfile("/d/c", 0o644, b"c"))
    patch = llb.diff(base, changed)
    target = llb.scratch().file(
        llb.mkdir("/d", 0o755).mkfile("/d/a", 0o644, b"A").mkfile("/x", 0o644, b"x")
    )
    return llb.merge([target, patch])


def diff_unrelated(ctx: llb.State) -> llb.State:
    # Entries compare by metadata (times included), as BuildKit's differ compares them: fixed
    # timestamps keep the case deterministic.
    lower = llb.scratch().file(
        llb.mkdir("/d", 0o755, timestamp=T)
        .mkfile("/d/same", 0o644, b"same", timestamp=T)
        .mkfile("/d/touched", 0o644, b"same", timestamp=T)
        .mkfile("/d/gone", 0o644, b"g", timestamp=T)
        .mkfile("/changed", 0o644, b"1", timestamp=T)
    )
    upper = llb.scratch().file(
        llb.mkdir("/d", 0o755, timestamp=T)
        .mkfile("/d/same", 0o644, b"same", timestamp=T)
        .mkfile("/d/touched", 0o644, b"same", timestamp=T + 10**9)
        .mkfile("/changed", 0o644, b"2", timestamp=T)
        .mkfile("/new", 0o644, b"n", timestamp=T)
    )
    return llb.merge([llb.scratch().file(llb.mkfile("/base", 0o644, b"b")), llb.diff(lower, upper)])


def chained_actions(ctx: llb.State) -> llb.State:
    return llb.scratch().file(
        llb.mkdir("/w", 0o755)
        .copy(ctx, "/dir", "/w/dir")
        .rm("/w/dir/b.md")
        .mkfile("/w/dir/new", 0o644, b"n")
        .copy(ctx, "/exec.sh", "/w/dir/sub/")
    )


CASES: dict[str, Case] = {
    f.__name__: f
    for f in (
        mkdir_mkfile,
        rm_variants,
        copy_basic,
        copy_wildcards,
        copy_links,
        copy_hardlinks_tree,
        copy_mode_owner_time,
        copy_patterns,
        copy_unpack,
        copy_into_symlinked_dest,
        merge_layers,
        merge_with_deletions,
        diff_on_top,
        diff_with_deletion_merged,
        diff_unrelated,
        chained_actions,
    )
}


def definition(name: str) -> bytes:
    """The marshaled definition of case ``name``."""
    state = CASES[name](llb.local("context"))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()
