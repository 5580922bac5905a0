"""The plugin templates: one per driver group, each a small plugin that lints and type-checks
once its markers are filled."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from llbkit.core.plugins.registry import DRIVER_GROUPS

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "plugins" / "_template"
#: template folder -> (kind word, a name, its capitalised form, entry-point group)
KINDS = {
    "exporter": ("exporter", "listing", "Listing", "llbkit.exporters"),
    "frontend": ("frontend", "oneline", "Oneline", "llbkit.frontends"),
    "cache_backend": ("cache", "dir", "Dir", "llbkit.cache_backends"),
    "worker": ("worker", "mini", "Mini", "llbkit.workers"),
    "source": ("source", "env", "Env", "llbkit.sources"),
}
KITS = {
    "exporter": "ExporterKit",
    "frontend": "FrontendKit",
    "cache_backend": "CacheBackendKit",
    "worker": "WorkerKit",
    "source": "SourceKit",
}
MARKER = re.compile(r"<REPLACE:([^>]*)>")
PACKAGE = "src/llbkit/plugins/<REPLACE:kind>_<REPLACE:name>"


def render(template: str, dest: Path) -> Path:
    """Copy a template and fill its markers, as a person following the README does."""
    kind, name, cap, _ = KINDS[template]
    values = {"kind": kind, "name": name, "Name": cap}
    shutil.copytree(TEMPLATES / template, dest)
    for path in sorted(dest.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            path.write_text(MARKER.sub(lambda m: values[m.group(1)], path.read_text()))
        if "<REPLACE:" in path.name:
            path.rename(path.with_name(MARKER.sub(lambda m: values[m.group(1)], path.name)))
    return dest


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0]


def test_there_is_one_template_per_driver_group():
    folders = {p.name for p in TEMPLATES.iterdir() if p.is_dir()}
    assert folders == set(KINDS)
    assert {group for *_, group in KINDS.values()} == set(DRIVER_GROUPS)


@pytest.mark.parametrize("template", sorted(KINDS))
def test_template_layout_and_markers(template, tmp_path):
    folder = TEMPLATES / template
    for required in ("pyproject.toml", "README.md", f"{PACKAGE}/__init__.py"):
        assert (folder / required).is_file(), f"{template}: no {required}"
    tests = "".join(p.read_text() for p in (folder / "tests").glob("test_*.py"))
    assert re.search(rf"class Test\S+\({KITS[template]}\):", tests), f"{template}: no kit"
    for path in folder.rglob("*"):
        text = path.read_text() if path.is_file() else ""
        used = set(MARKER.findall(text)) | set(MARKER.findall(path.name))
        assert used <= {"kind", "name", "Name"}, f"{path}: {used}"
    kind, name, _, group = KINDS[template]
    pyproject = tomllib.loads((render(template, tmp_path / "p") / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == f"llbkit-{kind}-{name}"
    (target,) = pyproject["project"]["entry-points"][group].values()
    assert list(pyproject["project"]["entry-points"]) == [group]
    assert target.startswith(f"llbkit.plugins.{kind}_{name}.")
    # Outside the workspace a [tool.uv.sources] entry fails; inside it, the root's is inherited.
    assert "uv" not in pyproject.get("tool", {})


@pytest.mark.parametrize("template", sorted(KINDS))
def test_rendered_template_is_clean_and_declares_what_it_imports(template, tmp_path):
    kind, name, _, _ = KINDS[template]
    plugin = render(template, tmp_path / f"{kind}_{name}")
    assert "<REPLACE:" not in "".join(p.read_text() for p in plugin.rglob("*") if p.is_file())
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--config", config, str(plugin)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    declared = {_name(r) for r in requirements}
    imported = set()
    for path in (plugin / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "llbkit"}
    assert third_party <= declared, f"{template} imports undeclared {third_party - declared}"
    if any("llbkit.sdk" in p.read_text() for p in (plugin / "src").rglob("*.py")):
        assert "llbkit-sdk" in {_name(r) for r in project["dependencies"]}


@pytest.mark.slow
@pytest.mark.parametrize("template", sorted(KINDS))
def test_rendered_template_type_checks_strictly(template, tmp_path, tmp_path_factory):
    kind, name, _, _ = KINDS[template]
    plugin = render(template, tmp_path / f"{kind}_{name}")
    cache = tmp_path_factory.getbasetemp() / "template-mypy-cache"
    flags = ["--strict", "--namespace-packages", "--explicit-package-bases", "--cache-dir"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *flags, str(cache), "src", "tests"],
        capture_output=True,
        text=True,
        cwd=plugin,
        env={**os.environ, "MYPYPATH": "src"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
