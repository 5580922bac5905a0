"""Fixtures for core's tests: fake installed distributions for the plugin loader."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install a distribution into a fresh directory on sys.path: metadata, entry points, modules.

    ``make_dist("acme-exporters", "1.2", {"llbkit.exporters": {"acme": "acme_mod:Exp"}},
    {"acme_mod": "class Exp: ..."})`` returns the directory.
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    added: list[str] = []

    def make(
        name: str,
        version: str,
        entry_points: Mapping[str, Mapping[str, str]],
        modules: Mapping[str, str] | None = None,
    ) -> Path:
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        text = "".join(
            f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) + "\n"
            for group, eps in entry_points.items()
        )
        (info / "entry_points.txt").write_text(text)
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(source)
            added.append(module)
        importlib.invalidate_caches()
        return root

    yield make
    for module in added:
        sys.modules.pop(module, None)
