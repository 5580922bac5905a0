"""Hostile image layers: odd names kept, sparse entries and bad whiteouts refused in one line,
nothing written or deleted outside the tree."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from llbkit.core.snapshot.untar import LayerError, apply_tar, unpack_layer


def layer(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    out.seek(0)
    return out


def entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def gnu_sparse(name: str, real_size: int) -> io.BytesIO:
    """An old-GNU sparse entry ('S') of ``real_size`` bytes that holds one byte of data."""
    info = tarfile.TarInfo(name)
    info.size = 1
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = tarfile.itn(real_size - 1, 12, tarfile.GNU_FORMAT)  # the one data run
    header[398:410] = tarfile.itn(1, 12, tarfile.GNU_FORMAT)
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    return io.BytesIO(bytes(header[:512]) + b"x".ljust(512, b"\0") + b"\0" * 1024)


def pax_sparse(name: str, real_size: int) -> io.BytesIO:
    """A PAX (GNU 1.0) sparse entry of ``real_size`` bytes that holds one byte of data."""
    sparse_map = f"1\n{real_size - 1}\n1\n".encode().ljust(512, b"\0")
    info = tarfile.TarInfo("GNUSparseFile.0/" + name)
    info.size = len(sparse_map) + 1
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(real_size),
    }
    return layer((info, sparse_map + b"x"))


def test_names_that_begin_with_two_dots_are_kept(tmp_path: Path) -> None:
    apply_tar(
        layer(
            entry("..data", b"projected"),
            entry("..."),
            entry("d/..x", b"nested"),
            entry("../escaped", b"clamped to the top, as containerd does"),
        ),
        str(tmp_path / "t"),
    )
    tree = tmp_path / "t"
    assert (tree / "..data").read_bytes() == b"projected"
    assert (tree / "...").is_file()
    assert (tree / "d" / "..x").read_bytes() == b"nested"
    assert (tree / "escaped").is_file()
    assert sorted(os.listdir(tmp_path)) == ["t"]


def test_a_name_that_resolves_to_the_top_is_skipped(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir(mode=0o755)
    info, _ = entry("a/..", kind=tarfile.DIRTYPE)
    info.mode = 0o700
    apply_tar(layer((info, b"")), str(tree))
    assert os.stat(tree).st_mode & 0o777 == 0o755


@pytest.mark.parametrize("make", [gnu_sparse, pax_sparse], ids=["gnu", "pax"])
def test_sparse_entries_are_refused_in_one_line(tmp_path: Path, make: object) -> None:
    tree = tmp_path / "t"
    with pytest.raises(LayerError) as err:
        apply_tar(make("big", 64 << 20), str(tree), what="layer sha256:abc")  # type: ignore[operator]
    message = str(err.value)
    assert "\n" not in message and message.startswith("layer sha256:abc: cannot apply: ")
    assert "big" in message and ("header type 83" in message or "sparse" in message)
    assert not (tree / "big").exists()


@pytest.mark.parametrize("base", [".wh.", ".wh..", ".wh..."])
@pytest.mark.parametrize("unpack", [False, True], ids=["apply", "unpack"])
def test_whiteouts_naming_no_entry_are_refused(tmp_path: Path, base: str, unpack: bool) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    tree = outside / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "f").write_text("lower layer")
    stream = layer(entry(f"a/{base}"))
    with pytest.raises(LayerError, match=r"invalid whiteout name: \.wh\.") as err:
        if unpack:
            fresh = tmp_path / "fresh"
            fresh.mkdir()
            unpack_layer(stream, str(fresh), "oci")
        else:
            apply_tar(stream, str(tree))
    assert "\n" not in str(err.value)
    assert (tree / "a" / "f").is_file() and (outside / "keep").is_dir()


def test_valid_whiteouts_still_delete(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "gone").write_text("x")
    (tree / "a" / "..data").write_text("x")
    apply_tar(layer(entry("a/.wh.gone"), entry("a/.wh...data")), str(tree))
    assert os.listdir(tree / "a") == []


def test_a_hardlink_to_a_missing_member_is_one_line(tmp_path: Path) -> None:
    info, _ = entry("link", kind=tarfile.LNKTYPE)
    info.linkname = "missing"
    with pytest.raises(LayerError, match="cannot apply") as err:
        apply_tar(layer((info, b"")), str(tmp_path / "t"))
    assert "\n" not in str(err.value)


def test_a_zstd_layer_is_unpacked_in_one_frame_or_several(tmp_path: Path) -> None:
    import zstandard

    big = os.urandom(5 << 20)
    raw = layer(entry("etc", b"", tarfile.DIRTYPE), entry("etc/big", big)).getvalue()
    one = zstandard.ZstdCompressor().compress(raw)
    halves = [raw[: len(raw) // 2], raw[len(raw) // 2 :]]
    several = b"".join(zstandard.ZstdCompressor().compress(h) for h in halves)
    for n, blob in enumerate((one, several)):
        dest = tmp_path / f"tree{n}"
        dest.mkdir()
        with open(tmp_path / f"blob{n}", "wb") as f:
            f.write(blob)
        with open(tmp_path / f"blob{n}", "rb") as stream:
            unpack_layer(stream, str(dest), "oci", what="layer x")
        assert (dest / "etc" / "big").read_bytes() == big
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(LayerError, match=r"^layer x: cannot unpack: zstd: ") as err:
        unpack_layer(io.BytesIO(one[:4] + b"\xff" * 64), str(broken), "oci", what="layer x")
    assert "\n" not in str(err.value)


def test_a_gzip_layer_in_one_member_or_several_and_its_damage(tmp_path: Path) -> None:
    """gzip is inflated beside the unpacking; several members are one stream (as Go's reader
    reads them); a cut stream, bad deflate data and a wrong checksum are each one line, and
    no reading thread is left behind."""
    import gzip
    import threading

    big = os.urandom(3 << 20)
    raw = layer(entry("etc", b"", tarfile.DIRTYPE), entry("etc/big", big)).getvalue()
    one = gzip.compress(raw, mtime=0)
    several = gzip.compress(raw[:1000], mtime=0) + gzip.compress(raw[1000:], mtime=0)
    threads = threading.active_count()
    for n, blob in enumerate((one, several)):
        dest = tmp_path / f"tree{n}"
        dest.mkdir()
        unpack_layer(io.BytesIO(blob), str(dest), "oci", what="layer x")
        assert (dest / "etc" / "big").read_bytes() == big
    checksum = bytearray(one)
    checksum[-8] ^= 0xFF
    for blob, said in (
        (one[: len(one) // 2], "unexpected end of data"),
        (one[:10] + b"\xff" * 4096, "invalid compressed data"),
        (bytes(checksum), "gzip: invalid checksum"),
    ):
        broken = tmp_path / f"broken{len(blob)}"
        broken.mkdir()
        with pytest.raises(LayerError) as err:
            unpack_layer(io.BytesIO(blob), str(broken), "oci", what="layer x")
        assert str(err.value) == f"layer x: cannot unpack: {said}"
    assert threading.active_count() == threads


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def test_a_directory_replaced_by_a_symlink_gets_no_time_through_it(tmp_path: Path) -> None:
    """Directory times are set once all entries are in; by then a later entry may have made a
    parent a symlink (looping, or leading out of the tree): nothing is reached through it."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    os.utime(outside / "sub", (1000, 1000))
    old = (entry("a", b"", tarfile.DIRTYPE), entry("a/sub", b"", tarfile.DIRTYPE))
    for n, target in enumerate(("a", str(outside))):
        dest = tmp_path / f"tree{n}"
        dest.mkdir()
        apply_tar(layer(*old, _symlink("a", target)), str(dest))  # found by fuzzing: ELOOP
        assert os.readlink(dest / "a") == target
    assert (outside / "sub").stat().st_mtime == 1000
