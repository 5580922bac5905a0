"""BuildKit's content checksums of a client's directory: the values BuildKit v0.11.6 keyed
a Dockerfile's COPY steps by (the content records of the cache it exported building
``COPY . /all``, ``COPY a.txt /a``, ``COPY sub /sub``, ``COPY link /l``, ``COPY dirlink/b.txt
/b`` and ``COPY a.txt sub/b.txt /two/`` from this folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llbkit.core.fs.buildkit_contenthash import BuildKitHasher, content_key

DOCKERFILE = (
    "ARG BASE\nFROM $BASE\nCOPY . /all\nCOPY a.txt /a\nCOPY sub /sub\nCOPY link /l\n"
    "COPY dirlink/b.txt /b\nCOPY a.txt sub/b.txt /two/\n"
)
BUILDKIT = {
    (("/", True, False),): "6e08080b63182c72b56f26da61637b0091e99289bd3bfa8cb5a42d3a32928bb5",
    (("/a.txt", True, False),): "286f4db492f491f7b3f357be9b60a4964ab5322915dda76c7810107aa9e116c3",
    (("/sub", True, False),): "f6d10cf784b8ed1837b241fdd1e93a686136bee39d5fe71f838e73b2ee73f15d",
    (("/link", True, False),): "286f4db492f491f7b3f357be9b60a4964ab5322915dda76c7810107aa9e116c3",
    (
        ("/dirlink/b.txt", True, False),
    ): "efbaa139ad19df3547701f3ab9d08e811a38b6a2fdf62bda33eda7c5f67c1535",
    (("/a.txt", True, False), ("/sub/b.txt", True, False)): (
        "0db92f3dddd664b33b868feee5cb1f966d13c36f41eaad5d0a4732143dcd7024"
    ),
}


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "sub" / "deep").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "exec.sh").write_text("#!/bin/sh\n")
    (ctx / "sub" / "b.txt").write_text("b\n")
    (ctx / "sub" / "deep" / "c").write_text("c\n")
    (ctx / "empty").write_text("")
    (ctx / "link").symlink_to("a.txt")
    (ctx / "dirlink").symlink_to("sub")
    for path, mode in (("", 0o755), ("sub", 0o755), ("sub/deep", 0o700), ("exec.sh", 0o755)):
        os.chmod(ctx / path, mode)
    for path in ("Dockerfile", "a.txt", "empty", "sub/b.txt", "sub/deep/c"):
        os.chmod(ctx / path, 0o644)
    return ctx


@pytest.mark.parametrize("reads", list(BUILDKIT), ids=[str(r) for r in BUILDKIT])
def test_buildkits_content_keys(context: Path, reads: tuple[tuple[str, bool, bool], ...]) -> None:
    assert content_key(BuildKitHasher(context, local=True), reads) == "sha256:" + BUILDKIT[reads]


def test_what_is_not_content_changes_nothing(context: Path) -> None:
    """Times never count; a client's owners are not sent (BuildKit's are 0:0)."""
    before = content_key(BuildKitHasher(context, local=True), (("/", True, False),))
    os.utime(context / "a.txt", (1, 1))
    if os.geteuid() == 0:
        os.lchown(context / "sub" / "b.txt", 1000, 1000)
    assert content_key(BuildKitHasher(context, local=True), (("/", True, False),)) == before
    os.chmod(context / "a.txt", 0o600)
    assert content_key(BuildKitHasher(context, local=True), (("/", True, False),)) != before


def test_a_missing_path_is_an_error(context: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BuildKitHasher(context, local=True).checksum("/nope", follow=True)


#: BuildKit's keys of wildcard copies from :func:`wild` (``COPY src/*.txt /txt/`` and so on)
WILDCARDS = {
    (
        ("/src/*.txt", True, True),
    ): "064b60f6e8dcc2cd3ae8b99a86b4c9df83c30b8dbbc775617b2ea626733eaa5b",
    (("/*.md", True, True),): "a34509c076c963bfbef5391bab786db3d9d2a2b279b5e5f7db90d814ea7dabda",
    (("/s*", True, True),): "541544b25a47826536b7efde88cadd7750e57e6b00e222431662ddc34e2d4536",
    (
        ("/src/a?.txt", True, True),
    ): "164f8dd1ec75ef750e62bab9c32818a28b104209b43c4fda119b8195dd2b2231",
    (
        ("/src/ab*.txt", True, True),
    ): "1a309af39465036dfb0586621a298ae605142652b59d7f9badb227b2cafdf5ea",
    (("/src/l*", True, True),): "a58e8be7916622ae4be3ac720bf81f75acf249d86f2b5b7055c0c90665d031b8",
    (("/*.md", True, True), ("/src/*.txt", True, True)): (
        "c3b20886d560b649a8dad1bc08768cb17c6d72628b007752a0ba92752fab0f77"
    ),
}


@pytest.fixture
def wild(tmp_path: Path) -> Path:
    ctx = tmp_path / "wild"
    (ctx / "src" / "sub").mkdir(parents=True)
    (ctx / "sdir").mkdir()
    (ctx / "Dockerfile").write_text(
        "ARG BASE\nFROM $BASE\nCOPY src/*.txt /txt/\nCOPY *.md /md/\nCOPY s* /x/\n"
        "COPY src/a?.txt /q/\nCOPY src/ab*.txt /one\nCOPY src/l* /links/\n"
        "COPY src/*.txt *.md /mix/\n"
    )
    for name, body in (
        ("src/a1.txt", "1"),
        ("src/ab.txt", "2"),
        ("src/c.txt", "3"),
        ("src/sub/n.txt", "n"),
        ("README.md", "r"),
        ("CHANGES.md", "c"),
        ("sdir/f", "s"),
    ):
        (ctx / name).write_text(body + "\n")
        os.chmod(ctx / name, 0o644)
    (ctx / "src" / "link.txt").symlink_to("a1.txt")
    (ctx / "src" / "ldir").symlink_to("sub")
    for folder in ("", "src", "src/sub", "sdir"):
        os.chmod(ctx / folder, 0o755)
    return ctx


@pytest.mark.parametrize("reads", list(WILDCARDS), ids=[str(r) for r in WILDCARDS])
def test_buildkits_wildcard_content_keys(
    wild: Path, reads: tuple[tuple[str, bool, bool], ...]
) -> None:
    assert content_key(BuildKitHasher(wild, local=True), reads) == "sha256:" + WILDCARDS[reads]
