"""Modules kept compiled in one file: a later process takes them from it and gets the same
modules (files, packages, resources, tracebacks); a source or a folder of ``sys.path`` that
changed, or a file that cannot be trusted or read, is not used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Run with: the cache folder, then the folders to put on sys.path (in that order).
PROGRAM = r"""
import json, sys, traceback
sys.path[1:1] = sys.argv[2:]
from llbkit.core.cli.modulecache import install
install(sys.argv[1])
import fractions
import kpkg.sub
import importlib.resources
try:
    kpkg.sub.fail()
except ValueError:
    shown = traceback.format_exc()
print(json.dumps({
    "value": kpkg.sub.VALUE,
    "helper": kpkg.sub.helper(),
    "loaders": [type(m.__loader__).__name__ for m in (kpkg, kpkg.sub, fractions)],
    "files": [kpkg.__file__, kpkg.sub.__file__, kpkg.sub.__spec__.origin],
    "package": [list(kpkg.__path__), kpkg.__package__, kpkg.sub.__package__],
    "resource": importlib.resources.files("kpkg").joinpath("res.txt").read_text(),
    "traceback": "raise ValueError(VALUE)" in shown,
    "fraction": str(fractions.Fraction(3, 6)),
}))
"""


def _tree(root: Path, value: str = "one") -> Path:
    package = root / "kpkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("from .helpers import helper\n")
    (package / "helpers.py").write_text("def helper():\n    return 'helped'\n")
    (package / "sub.py").write_text(
        f"VALUE = {value!r}\nfrom . import helper\n\ndef fail():\n    raise ValueError(VALUE)\n"
    )
    (package / "res.txt").write_text("a resource\n")
    return root


def _run(tmp: Path, *paths: Path, command: str = "script") -> dict[str, object]:
    """PROGRAM as a script (as the ``llbkit`` command runs: its folder first on sys.path), or
    with ``-c`` (the working directory first)."""
    script = tmp / "program" / "run.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(PROGRAM)
    program = [str(script)] if command == "script" else ["-c", PROGRAM]
    done = subprocess.run(
        [sys.executable, *program, str(tmp / "cache"), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _kept(tmp: Path) -> list[Path]:
    return sorted((tmp / "cache").glob("modules-*.bin"))


def _same(a: dict[str, object], b: dict[str, object]) -> None:
    assert {k: v for k, v in a.items() if k != "loaders"} == {
        k: v for k, v in b.items() if k != "loaders"
    }


def test_a_later_process_takes_the_kept_code_and_gets_the_same_modules(tmp_path: Path) -> None:
    pkgs = _tree(tmp_path / "pkgs")
    first = _run(tmp_path, pkgs)
    assert first["loaders"] == ["SourceFileLoader"] * 3
    assert len(_kept(tmp_path)) == 1
    second = _run(tmp_path, pkgs)
    assert second["loaders"] == ["_Loader"] * 3
    _same(first, second)
    assert second["value"] == "one" and second["traceback"] and second["helper"] == "helped"
    assert second["resource"] == "a resource\n"


def test_a_changed_source_is_imported_from_it_and_kept_again(tmp_path: Path) -> None:
    pkgs = _tree(tmp_path / "pkgs")
    _run(tmp_path, pkgs)
    _tree(pkgs, value="a longer value")  # the same files, sub.py changed
    changed = _run(tmp_path, pkgs)
    assert changed["value"] == "a longer value"
    assert changed["loaders"][1] == "SourceFileLoader"  # type: ignore[index]
    again = _run(tmp_path, pkgs)
    assert again["loaders"] == ["_Loader"] * 3
    _same(changed, again)


def test_a_module_shadowing_a_kept_one_from_an_earlier_folder_is_the_one_imported(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", _tree(tmp_path / "second")
    first.mkdir()
    _run(tmp_path, first, second)
    assert _run(tmp_path, first, second)["loaders"] == ["_Loader"] * 3
    _tree(first, value="shadow")
    shadowed = _run(tmp_path, first, second)
    assert shadowed["value"] == "shadow"
    assert shadowed["files"][0].startswith(str(first))  # type: ignore[index]


@pytest.mark.parametrize("damage", ["group-writable", "garbage", "cut", "garbled code"])
def test_a_file_that_cannot_be_trusted_or_read_is_not_used(tmp_path: Path, damage: str) -> None:
    pkgs = _tree(tmp_path / "pkgs")
    expected = _run(tmp_path, pkgs)
    (kept,) = _kept(tmp_path)
    if damage == "group-writable":
        os.chmod(kept, 0o664)
    elif damage == "garbage":
        kept.write_bytes(b"\x00not a module file" * 100)
    elif damage == "cut":
        kept.write_bytes(kept.read_bytes()[:-1000])
    else:  # the index intact, the code after it not: each module is as if not kept
        data = kept.read_bytes()
        kept.write_bytes(data[: len(data) // 2] + b"\xff" * (len(data) - len(data) // 2))
    after = _run(tmp_path, pkgs)
    _same(expected, after)
    if damage in ("group-writable", "garbage"):  # the index cannot be read
        assert after["loaders"] == ["SourceFileLoader"] * 3
    if damage != "group-writable":  # written again, and used
        assert _run(tmp_path, pkgs)["loaders"] == ["_Loader"] * 3


def test_nothing_is_kept_with_the_working_directory_on_the_path(tmp_path: Path) -> None:
    """``python -c`` puts the working directory first on the path: a folder whose content
    changes with every command (a build's output) would set the file aside each time."""
    pkgs = _tree(tmp_path / "pkgs")
    _run(tmp_path, pkgs, command="-c")
    assert _run(tmp_path, pkgs, command="-c")["loaders"] == ["SourceFileLoader"] * 3
    assert _kept(tmp_path) == []


def test_the_files_of_paths_unused_for_a_month_are_removed(tmp_path: Path) -> None:
    pkgs = _tree(tmp_path / "pkgs")
    cache = tmp_path / "cache"
    cache.mkdir()
    old, recent = cache / "modules-cpython-0-old.bin", cache / "modules-cpython-0-recent.bin"
    for kept in (old, recent):
        kept.write_bytes(b"another environment's modules")
    os.utime(old, (0, 0))
    _run(tmp_path, pkgs)
    assert not old.exists() and recent.exists()
    assert len(_kept(tmp_path)) == 2
