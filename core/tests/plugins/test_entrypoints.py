"""The entry-point index: what it lists equals a metadata scan, and installs are never missed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

from llbkit.core.plugins import entrypoints
from llbkit.core.plugins.entrypoints import CACHE_ENV, index, load_target


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.setattr(entrypoints, "_MEMO", {})
    return cache


def _scanned() -> dict[str, set[tuple[str, str]]]:
    found: dict[str, set[tuple[str, str]]] = {}
    seen = set()
    for dist in distributions():
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group.startswith("llbkit."):
                found.setdefault(ep.group, set()).add((ep.name, ep.value))
    return found


def _names(groups: dict[str, list[entrypoints.Entry]]) -> dict[str, set[tuple[str, str]]]:
    return {g: {(e.name, e.value) for e in entries} for g, entries in groups.items()}


def test_index_equals_a_metadata_scan_and_is_written(own_cache: Path) -> None:
    assert _names(index()) == _scanned()
    assert "dockerfile.v0" in {e.name for e in index()["llbkit.frontends"]}
    assert len(list(own_cache.glob("entry-points-*.json"))) == 1
    entrypoints._MEMO.clear()
    assert _names(index()) == _scanned()  # read back from the file


def _index_in_child(
    cache: Path, extra_path: Path | None = None, cwd: Path | None = None
) -> dict[str, object]:
    code = (
        "import json, sys\n"
        + (f"sys.path.insert(1, {str(extra_path)!r})\n" if extra_path else "")
        + "from llbkit.core.plugins.entrypoints import index\n"
        "groups = index()\n"
        "print(json.dumps({'scanned': 'importlib.metadata' in sys.modules,\n"
        "  'frontends': sorted(e.name for e in groups.get('llbkit.frontends', []))}))\n"
    )
    env = {**os.environ, CACHE_ENV: str(cache)}
    command = [sys.executable, "-c", code]
    if cwd is not None:  # as ``-m`` does: the folder itself first on the path
        (cwd / "probe.py").write_text(code)
        command = [sys.executable, str(cwd / "probe.py")]
    out = subprocess.run(
        command,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    return json.loads(out.stdout)


def test_a_second_process_reads_the_index_without_scanning_metadata(own_cache: Path) -> None:
    first = _index_in_child(own_cache)
    second = _index_in_child(own_cache)
    assert first["scanned"] is True
    assert second["scanned"] is False
    assert second["frontends"] == first["frontends"]


def test_commands_run_from_another_directory_share_the_index(
    own_cache: Path, tmp_path: Path
) -> None:
    """``python -m llbkit.core`` puts the working directory first on the path: where that is
    does not matter, only a distribution in it would."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = _index_in_child(own_cache, cwd=tmp_path / "one")
    second = _index_in_child(own_cache, cwd=tmp_path / "two")
    assert first["scanned"] is True and second["scanned"] is False
    _dist(tmp_path / "two", "llbkit-from-here", {"here.v0": "os:getcwd"})
    third = _index_in_child(own_cache, cwd=tmp_path / "two")
    assert third["scanned"] is True and "here.v0" in third["frontends"]  # type: ignore[operator]


def _dist(site: Path, name: str, frontends: dict[str, str]) -> Path:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in frontends.items())
    (info / "entry_points.txt").write_text(f"[llbkit.frontends]\n{lines}")
    return info


def test_install_change_and_uninstall_are_seen_by_the_next_process(
    own_cache: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    assert "acme.v0" not in _index_in_child(own_cache, site)["frontends"]
    info = _dist(site, "acme", {"acme.v0": "acme:F"})
    seen = _index_in_child(own_cache, site)
    assert seen["scanned"] is True and "acme.v0" in seen["frontends"]
    assert _index_in_child(own_cache, site)["scanned"] is False
    # An upgrade that rewrites entry_points.txt in place (no new folder) is seen too.
    _dist(site, "acme", {"acme.v0": "acme:F", "acme.v1": "acme:G"})
    assert "acme.v1" in _index_in_child(own_cache, site)["frontends"]
    for child in info.iterdir():
        child.unlink()
    info.rmdir()
    assert "acme.v0" not in _index_in_child(own_cache, site)["frontends"]


def test_files_written_beside_a_path_entry_do_not_force_a_scan(
    own_cache: Path, tmp_path: Path
) -> None:
    # Under ``python -m`` the working directory is on the path, and builds write into it.
    site = tmp_path / "site"
    site.mkdir()
    assert _index_in_child(own_cache, site)["scanned"] is True
    (site / "out.tar").write_bytes(b"an output")
    (site / "dest").mkdir()
    assert _index_in_child(own_cache, site)["scanned"] is False


def test_a_new_path_entry_in_this_process_is_seen(tmp_path: Path, monkeypatch) -> None:
    before = {e.name for e in index().get("llbkit.frontends", [])}
    site = tmp_path / "site"
    _dist(site, "acme", {"acme.v0": "acme:F"})
    monkeypatch.syspath_prepend(str(site))
    after = {e.name for e in index()["llbkit.frontends"]}
    assert after == before | {"acme.v0"}
    (entry,) = [e for e in index()["llbkit.frontends"] if e.name == "acme.v0"]
    assert (entry.distribution, entry.version, entry.value) == ("acme", "1.0", "acme:F")


def test_a_damaged_index_file_is_rescanned_and_rewritten(own_cache: Path) -> None:
    _index_in_child(own_cache)
    (written,) = own_cache.glob("entry-points-*.json")
    for junk in (b"\x00\xff not json", b"[]", b'{"fingerprint": 1}', b""):
        written.write_bytes(junk)
        assert _index_in_child(own_cache)["frontends"] == ["dockerfile.v0"]
        assert json.loads(written.read_bytes())["groups"]


def test_an_unwritable_or_disabled_cache_costs_only_speed(tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "sub"))
    assert _names(index()) == _scanned()
    monkeypatch.setenv(CACHE_ENV, "off")
    entrypoints._MEMO.clear()
    assert _names(index()) == _scanned()
    assert not list(tmp_path.glob("**/entry-points-*.json"))


def test_load_target_follows_entry_point_syntax() -> None:
    assert load_target("os.path:join") is os.path.join
    assert load_target("os:path.join") is os.path.join
    assert load_target("os.path") is os.path
    assert load_target("os.path:join [extra1, extra2]") is os.path.join
    with pytest.raises(ModuleNotFoundError):
        load_target("no_such_module_here:x")
    with pytest.raises(AttributeError):
        load_target("os:no_such_attr")
