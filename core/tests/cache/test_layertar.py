"""A layer's tar holds what BuildKit's differ writes for the same change: entries unchanged
from the layers below are left out (a directory is written only as the parent of a change),
an opaque directory becomes whiteouts of the names it hides, and entries come depth first."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from llbkit.core.cache.layertar import tar_layer

NS = 1_600_000_000_123_456_789


def _entries(layer: Path, lowers: list[Path] | None) -> list[tuple[str, int]]:
    out = io.BytesIO()
    tar_layer(layer, out, "oci", None, lowers)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        return [(m.name, m.mode) for m in tar.getmembers()]


def _file(path: Path, text: str, ns: int = NS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(ns, ns))


def test_what_is_unchanged_from_below_is_left_out(tmp_path: Path) -> None:
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    _file(lower / "etc/passwd", "root\n")
    _file(lower / "etc/group", "root\n")
    _file(lower / "keep", "same\n")
    # A directory copied up for a mount point, then left empty; a file copied up unchanged.
    (layer / "etc").mkdir(parents=True)
    _file(layer / "keep", "same\n")
    _file(layer / "new", "new\n")
    assert _entries(layer, [lower]) == [("new", 0o644)]
    # Without the layers below (not fetched), everything is written.
    assert [n for n, _ in _entries(layer, None)] == ["etc", "keep", "new"]


def test_a_changed_file_brings_its_unchanged_parents(tmp_path: Path) -> None:
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    _file(lower / "a/b/c", "one\n")
    _file(layer / "a/b/c", "two\n", NS + 1)
    assert [n for n, _ in _entries(layer, [lower])] == ["a", "a/b", "a/b/c"]
    os.chmod(layer / "a", 0o700)  # a directory's mode counts, its time does not
    _file(layer / "a/b/c", "one\n")
    assert _entries(layer, [lower]) == [("a", 0o700)]


def test_an_epoch_caps_the_times_of_the_parents_a_change_brings(tmp_path: Path) -> None:
    """With a timestamp to rewrite to (``rewrite-timestamp``), every entry later than it gets
    it: the unchanged parents written for a change too, not only the change."""
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    _file(lower / "a/b/c", "one\n")
    _file(layer / "a/b/c", "two\n", NS + 1)
    for folder in (layer / "a/b", layer / "a"):
        os.utime(folder, ns=(NS + 10**12, NS + 10**12))
    out = io.BytesIO()
    epoch = NS // 10**9 + 100
    tar_layer(layer, out, "oci", epoch, [lower])
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        times = {m.name: m.mtime for m in tar.getmembers()}
    assert times == {"a": epoch, "a/b": epoch, "a/b/c": NS // 10**9}


def test_same_time_and_size_whole_seconds_compare_content(tmp_path: Path) -> None:
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    whole = 1_600_000_000 * 10**9
    _file(lower / "f", "aaa\n", whole)
    _file(layer / "f", "bbb\n", whole)
    assert [n for n, _ in _entries(layer, [lower])] == ["f"]
    _file(layer / "f", "aaa\n", whole)
    assert _entries(layer, [lower]) == []


def test_an_opaque_directory_becomes_whiteouts_of_what_it_hides(tmp_path: Path) -> None:
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    _file(lower / "d/e/f", "x\n")
    _file(lower / "d/g", "old\n")
    _file(lower / "d/h", "same\n")
    _file(layer / "d/g", "new\n", NS + 1)
    _file(layer / "d/h", "same\n")
    (layer / "d/.wh..wh..opq").touch()
    (layer / "d/.wh.nothing").touch()  # a deletion of what is not below is not written
    assert _entries(layer, [lower]) == [("d", 0o755), ("d/.wh.e", 0), ("d/g", 0o644)]
    # Not knowing what is below, the directory keeps its marker.
    assert [n for n, _ in _entries(layer, None)] == [
        "d",
        "d/.wh..wh..opq",
        "d/g",
        "d/h",
        "d/.wh.nothing",  # where the name it deletes sorts
    ]


def test_entries_are_depth_first_in_name_order(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    for name in ("a/b/x", "a.txt", "a0", "a/c"):
        _file(layer / name, name)
    names = [n for n, _ in _entries(layer, [])]
    assert names == ["a", "a/b", "a/b/x", "a/c", "a.txt", "a0"]


def test_several_layers_below_merge_as_a_mount_would(tmp_path: Path) -> None:
    bottom, middle, layer = tmp_path / "bottom", tmp_path / "middle", tmp_path / "layer"
    _file(bottom / "d/f", "one\n")
    _file(middle / "d/f", "two\n", NS + 1)  # the nearer layer's file is the one compared
    (middle / ".wh.gone").touch()
    _file(bottom / "gone", "x\n")
    _file(layer / "d/f", "two\n", NS + 1)
    (layer / ".wh.gone").touch()  # already deleted below: nothing to write
    assert _entries(layer, [middle, bottom]) == []
