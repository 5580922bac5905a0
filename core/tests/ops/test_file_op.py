"""FileOp actions on real directories, with BuildKit's semantics."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest

from llbkit.core.errors import UserError
from llbkit.core.llb import load_definition
from llbkit.core.ops.file import FileOpError, clean_path, run_file_op
from llbkit.sdk import llb

AMD64 = llb.Platform("linux", "amd64")
T0 = 1_600_000_000_000_000_000  # a timestamp in ns


class Workdirs:
    """Fresh writable copies, as a store would hand them out."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made = 0

    def __call__(self, seed: Path | None) -> Path:
        self.made += 1
        target = Path(tempfile.mkdtemp(dir=self.base, prefix="work"))
        if seed is not None:
            shutil.copytree(seed, target, symlinks=True, dirs_exist_ok=True)
        return target


def run(state: llb.State, inputs: dict[str, Path], tmp_path: Path) -> list[Path]:
    """Run the last file op of ``state``; ``inputs`` maps source identifiers to directories."""
    loaded = load_definition(state.marshal(AMD64).to_bytes())
    op = loaded.by_digest[loaded.result.digest].op
    roots = []
    for item in op.inputs:
        source = loaded.by_digest[item.digest].op.source.identifier
        roots.append(inputs[source])
    return run_file_op(op, roots, Workdirs(tmp_path))


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    (root / "app/sub").mkdir(parents=True)
    (root / "app/a.txt").write_text("a")
    (root / "app/b.md").write_text("b")
    (root / "app/sub/c.txt").write_text("c")
    os.chmod(root / "app/a.txt", 0o640)
    os.link(root / "app/a.txt", root / "app/hard.txt")
    os.symlink("/etc/passwd", root / "app/passwd-link")
    os.utime(root / "app/a.txt", ns=(T0, T0))
    return root


IMG = "docker-image://docker.io/library/src:latest"


def image():
    return llb.image("src")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_mkdir_mkfile_chain_writes_modes_and_times(tmp_path):
    state = llb.scratch().file(
        llb.mkdir("/a/b", 0o750, make_parents=True, timestamp=T0).mkfile(
            "/a/b/f", 0o604, b"data", timestamp=T0
        )
    )
    (out,) = run(state, {}, tmp_path)
    assert (out / "a/b/f").read_bytes() == b"data"
    assert stat.S_IMODE((out / "a/b").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "a/b/f").stat().st_mode) == 0o604
    assert (out / "a/b/f").stat().st_mtime_ns == T0


def test_mkdir_without_parents_fails_and_existing_dir_is_fine(tmp_path):
    with pytest.raises(FileOpError, match="mkdir /x/y: parent directory does not exist"):
        run(llb.scratch().file(llb.mkdir("/x/y")), {}, tmp_path)
    (out,) = run(llb.scratch().file(llb.mkdir("/x").mkdir("/x")), {}, tmp_path)
    assert (out / "x").is_dir()


def test_copy_a_file_into_a_new_directory(src, tmp_path):
    (out,) = run(
        llb.scratch().file(llb.copy(image(), "/app/a.txt", "/dest/", create_dest_path=True)),
        {IMG: src},
        tmp_path,
    )
    assert (out / "dest/a.txt").read_text() == "a"
    assert stat.S_IMODE((out / "dest/a.txt").stat().st_mode) == 0o640
    assert (out / "dest/a.txt").stat().st_mtime_ns == T0  # times are kept


def test_copy_needs_the_parent_unless_create_dest_path(src, tmp_path):
    with pytest.raises(FileOpError, match="does not exist"):
        run(llb.scratch().file(llb.copy(image(), "/app/a.txt", "/missing/x")), {IMG: src}, tmp_path)


def test_directory_copied_as_itself_or_its_contents(src, tmp_path):
    (whole,) = run(
        llb.scratch().file(llb.mkdir("/d").copy(image(), "/app", "/d")), {IMG: src}, tmp_path
    )
    assert "d/app/sub/c.txt" in tree(whole)
    (contents,) = run(
        llb.scratch().file(
            llb.copy(image(), "/app", "/d", copy_dir_contents=True, create_dest_path=True)
        ),
        {IMG: src},
        tmp_path,
    )
    assert "d/sub/c.txt" in tree(contents) and "d/app" not in tree(contents)


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        # a directory over a file: BuildKit's words, the path in the image
        (
            lambda: llb.mkfile("/d", 0o644, b"f").copy(
                image(), "/app", "/d", copy_dir_contents=True
            ),
            "cannot copy to non-directory: /d",
        ),
        # a file over a directory
        (
            lambda: llb.mkdir("/d/a.txt", make_parents=True).copy(
                image(), "/app", "/d", copy_dir_contents=True
            ),
            "cannot replace to directory /d/a.txt with file",
        ),
        # a file where a parent directory should be
        (
            lambda: llb.mkfile("/f", 0o644, b"f").copy(
                image(), "/app/a.txt", "/f/x/y", create_dest_path=True
            ),
            "mkdir /f: not a directory",
        ),
    ],
)
def test_copy_errors_name_the_path_in_the_image(src, tmp_path, actions, expected):
    with pytest.raises(FileOpError) as err:
        run(llb.scratch().file(actions()), {IMG: src}, tmp_path)
    assert str(err.value).endswith(expected) and str(tmp_path) not in str(err.value)


@pytest.mark.parametrize(
    ("pattern", "found"),
    [("/app/[^a]*", ["b.md", "hard.txt", "passwd-link", "sub"]), ("/app/[!a]*", ["a.txt"])],
)
def test_wildcard_classes_as_go_reads_them(src, tmp_path, pattern, found):
    state = llb.scratch().file(
        llb.copy(image(), pattern, "/out/", allow_wildcard=True, create_dest_path=True)
    )
    (out,) = run(state, {IMG: src}, tmp_path)
    assert sorted(os.listdir(out / "out")) == found


def test_malformed_wildcard_is_one_clear_error(src, tmp_path):
    state = llb.scratch().file(
        llb.copy(image(), "/app/[a", "/out/", allow_wildcard=True, create_dest_path=True)
    )
    with pytest.raises(UserError, match="syntax error in pattern"):
        run(state, {IMG: src}, tmp_path)


def test_wildcards_mode_and_hardlinks(src, tmp_path):
    state = llb.scratch().file(
        llb.copy(
            image(), "/app/*.txt", "/out/", allow_wildcard=True, create_dest_path=True, mode=0o600
        )
    )
    (out,) = run(state, {IMG: src}, tmp_path)
    assert tree(out) == ["out", "out/a.txt", "out/hard.txt"]
    assert stat.S_IMODE((out / "out/a.txt").stat().st_mode) == 0o600
    assert (out / "out/a.txt").stat().st_ino == (out / "out/hard.txt").stat().st_ino
    with pytest.raises(FileOpError, match="no source files"):
        run(
            llb.scratch().file(llb.copy(image(), "/app/*.none", "/o/", allow_wildcard=True)),
            {IMG: src},
            tmp_path,
        )
    (empty,) = run(
        llb.scratch().file(
            llb.copy(image(), "/app/*.none", "/o/", allow_wildcard=True, allow_empty_wildcard=True)
        ),
        {IMG: src},
        tmp_path,
    )
    assert tree(empty) == []


def test_symlinks_kept_or_followed_inside_the_source_root(src, tmp_path):
    (kept,) = run(
        llb.scratch().file(llb.copy(image(), "/app/passwd-link", "/l")), {IMG: src}, tmp_path
    )
    assert os.readlink(kept / "l") == "/etc/passwd"
    (followed,) = run(
        llb.scratch().file(llb.copy(image(), "/app/passwd-link", "/l", follow_symlinks=True)),
        {IMG: src},
        tmp_path,
    )
    assert (followed / "l").read_text().startswith("root:x:0:0")  # the source root's /etc/passwd


def test_include_and_exclude_patterns(src, tmp_path):
    state = llb.scratch().file(
        llb.copy(
            image(),
            "/app",
            "/o",
            copy_dir_contents=True,
            create_dest_path=True,
            include_patterns=["*.txt", "sub"],
            exclude_patterns=["hard.txt"],
        )
    )
    (out,) = run(state, {IMG: src}, tmp_path)
    assert tree(out) == ["o", "o/a.txt", "o/sub", "o/sub/c.txt"]


def test_destination_paths_stay_inside_the_root(src, tmp_path):
    (out,) = run(
        llb.scratch().file(llb.copy(image(), "/app/a.txt", "/../../../escaped.txt")),
        {IMG: src},
        tmp_path,
    )
    assert tree(out) == ["escaped.txt"]
    assert not (tmp_path / "escaped.txt").exists()


def test_rm_single_wildcard_and_missing(src, tmp_path):
    (out,) = run(
        image().file(llb.rm("/app/*.txt", allow_wildcard=True).rm("/nope", allow_not_found=True)),
        {IMG: src},
        tmp_path,
    )
    assert "app/a.txt" not in tree(out) and "app/b.md" in tree(out)
    assert (src / "app/a.txt").exists()  # inputs are never modified
    with pytest.raises(FileOpError, match="rm /nope: no such file or directory"):
        run(image().file(llb.rm("/nope")), {IMG: src}, tmp_path)


@pytest.mark.root
def test_owner_by_id_and_by_name_from_the_target_passwd(src, tmp_path):
    state = image().file(
        llb.mkfile("/byid", 0o644, b"", owner="7:8")
        .mkfile("/byname", 0o644, b"", owner="app")
        .mkfile("/usergroup", 0o644, b"", owner="app:staff")
        .copy(image(), "/app/a.txt", "/copied", owner="1000")
    )
    (out,) = run(state, {IMG: src}, tmp_path)

    def owner(name):
        st = (out / name).stat()
        return st.st_uid, st.st_gid

    assert owner("byid") == (7, 8)
    assert owner("byname") == (1000, 1001)  # the user's primary group
    assert owner("usergroup") == (1000, 50)
    assert owner("copied") == (1000, 1000)


def _archive(mode: str) -> bytes:
    """A tar of two members, compressed as BuildKit's ADD recognizes: gz, bz2, xz, zst."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w" if mode == "zst" else f"w:{mode}") as archive:
        info = tarfile.TarInfo("pkg/file.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
        evil = tarfile.TarInfo("../../evil.txt")
        evil.size = 4
        archive.addfile(evil, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("pkg/link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "file.txt", 1_600_000_000
        archive.addfile(link)
    if mode == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data.getvalue())
    return data.getvalue()


@pytest.mark.parametrize("mode", ["gz", "bz2", "xz", "zst", ""])
def test_attempt_unpack_extracts_archives(tmp_path, mode):
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "a.tar").write_bytes(_archive(mode))
    (root / "plain.txt").write_text("not an archive")
    ctx = llb.local("ctx", unique="u")
    state = llb.scratch().file(
        llb.copy(ctx, "/a.tar", "/x/", attempt_unpack=True, create_dest_path=True).copy(
            ctx, "/plain.txt", "/x/", attempt_unpack=True
        )
    )
    (out,) = run(state, {"local://ctx": root}, tmp_path)
    assert (out / "x/pkg/file.txt").read_text() == "hello"
    assert (out / "x/evil.txt").read_text() == "evil"  # contained inside the destination
    assert os.readlink(out / "x/pkg/link") == "file.txt"
    assert os.lstat(out / "x/pkg/link").st_mtime == 1_600_000_000  # the link's own time
    assert (out / "x/plain.txt").read_text() == "not an archive"


@pytest.mark.parametrize("mode", ["gz", "zst"])
def test_attempt_unpack_of_a_broken_archive(tmp_path, mode):
    """Compressed data that is no tar is copied as it is (BuildKit's archive test reads a tar
    header); an archive cut short fails its step in one line naming the file."""
    root = tmp_path / "ctx"
    root.mkdir()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        info = tarfile.TarInfo("big.bin")
        info.size = 1 << 19  # zstd blocks are 128 KiB: a cut at half leaves whole ones
        archive.addfile(info, io.BytesIO(os.urandom(info.size)))
    whole = gzip.compress(data.getvalue())
    if mode == "gz":
        (root / "notar").write_bytes(gzip.compress(b"just text, no tar header" * 40))
    else:
        import zstandard

        (root / "notar").write_bytes(zstandard.ZstdCompressor().compress(b"no tar" * 200))
        whole = zstandard.ZstdCompressor().compress(data.getvalue())
    (root / "cut").write_bytes(whole[: len(whole) // 2])
    ctx = llb.local("ctx", unique="u")
    copied = llb.scratch().file(llb.copy(ctx, "/notar", "/x/", attempt_unpack=True))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (out,) = run(copied, {"local://ctx": root}, tmp_path / "a")
    assert (out / "x/notar").read_bytes() == (root / "notar").read_bytes()
    cut = llb.scratch().file(llb.copy(ctx, "/cut", "/y/", attempt_unpack=True))
    with pytest.raises(FileOpError, match=r"^unpack cut to /y/: "):
        run(cut, {"local://ctx": root}, tmp_path / "b")


def test_chained_results_and_outputs(src, tmp_path):
    base = image()
    workdirs = Workdirs(tmp_path)
    loaded = load_definition(
        base.file(llb.mkdir("/one").mkdir("/two").mkdir("/three")).marshal(AMD64).to_bytes()
    )
    op = loaded.by_digest[loaded.result.digest].op
    (out,) = run_file_op(op, [src], workdirs)
    assert {"one", "two", "three"} <= set(tree(out))
    assert workdirs.made == 1  # intermediate results were changed in place, the input copied once


def test_clean_path_keeps_directory_markers():
    assert clean_path("a/b/") == "/a/b/"
    assert clean_path("/a/./b/..") == "/a"
    assert clean_path("a/.") == "/a/."
    assert clean_path("/") == "/"


def test_a_path_named_like_dot_dot_is_shown_inside_the_image() -> None:
    from llbkit.core.ops.copier import inside

    assert inside("/state/tree", "/state/tree/..data/x") == "/..data/x"
    assert inside("/state/tree", "/state/tree/...") == "/..."
    assert inside("/state/tree", "/state/tree") == "/"
