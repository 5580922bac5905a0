"""Meta-tests: the repository keeps its own promises about plugins, hooks and layout."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pluggy
import pytest

from llbkit.core.plugins import hookspecs
from llbkit.core.plugins.registry import DRIVER_GROUPS, HOOKS_GROUP, PluginRegistry

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = sorted(
    p.parent
    for p in [
        ROOT / "core/pyproject.toml",
        ROOT / "sdk/pyproject.toml",
        *ROOT.glob("plugins/*/pyproject.toml"),
    ]
    if not p.parent.name.startswith("_")
)
HOOK_NAMES = sorted(
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("llbkit_")
)


def project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]


def declared_entry_points():
    for folder in DISTRIBUTIONS:
        for group, names in project(folder).get("entry-points", {}).items():
            for name, value in names.items():
                yield folder.name, group, name, value


@pytest.mark.parametrize(("folder", "group", "name", "value"), list(declared_entry_points()))
def test_every_declared_entry_point_is_installed_and_loads(folder, group, name, value):
    registry = PluginRegistry()
    installed = {(i.name, i.value) for i in registry.plugins(group)}
    assert (name, value) in installed, (
        f"{folder}: {group}:{name} is declared but not installed; run uv sync"
    )
    if group in DRIVER_GROUPS:
        registry.load_driver(group, name)
    else:
        assert group == HOOKS_GROUP, f"{folder}: unknown entry-point group {group}"
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        module, _, attr = value.partition(":")
        obj = __import__(module, fromlist=["_"])
        pm.register(getattr(obj, attr) if attr else obj)


def test_entry_point_group_and_names_follow_pypa_rules():
    for folder, group, name, _ in declared_entry_points():
        assert re.fullmatch(r"llbkit(\.\w+)+", group), (folder, group)
        assert re.fullmatch(r"[\w.-]+", name), (folder, name)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented_with_when_it_fires(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Fires" in doc, f"{hook}'s docstring must say when it fires"
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    for param in params:
        assert f":param {param}:" in doc, f"{hook} does not document {param}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_tested(hook):
    tests = [
        p
        for p in ROOT.glob("**/tests/**/test_*.py")
        if p.name != "test_meta.py" and ".venv" not in p.parts
    ]
    assert any(hook in p.read_text() for p in tests), f"no test exercises {hook}"


def test_known_plugins_table_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_known_plugins.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_llbkit_and_llbkit_plugins_are_namespace_packages():
    templates = sorted(p.parent for p in ROOT.glob("plugins/_template/*/pyproject.toml"))
    assert len(templates) == 5, templates
    for folder in [*DISTRIBUTIONS, *templates]:
        assert (folder / "src/llbkit").is_dir(), folder
        assert not (folder / "src/llbkit/__init__.py").exists(), folder
        assert not (folder / "src/llbkit/plugins/__init__.py").exists(), folder
    for folder in [*(f for f in DISTRIBUTIONS if f.parent.name == "plugins"), *templates]:
        # Beneath the two namespaces, one regular package: llbkit.plugins.<kind>_<name>.
        found = [p for p in (folder / "src/llbkit/plugins").iterdir() if p.name != "__pycache__"]
        assert len(found) == 1 and (found[0] / "__init__.py").is_file(), folder


def test_each_contract_is_small_versioned_and_documented():
    from llbkit.core.plugins import cache_backend, exporter, frontend, source, worker

    # Each version is what docs/plugins.md says it is.
    docs = (ROOT / "docs/plugins.md").read_text()
    assert "cache backend `api_version = 3`" in docs
    for module in (cache_backend, exporter, frontend, source, worker):
        declared = module.API_VERSION
        assert declared == (3 if module is cache_backend else 2), module.__name__
        assert module.__doc__
        assert len(Path(module.__file__).read_bytes()) < 5000, (
            f"{module.__name__} is no longer small"
        )
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not getattr(cls, "_is_protocol", False):
                continue
            for name, member in vars(cls).items():
                if callable(member) and not name.startswith("_"):
                    assert member.__doc__, (
                        f"{module.__name__}.{cls.__name__}.{name} has no docstring"
                    )


def _imports(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in (folder / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _normalize(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=lambda p: p.name)
def test_each_distribution_declares_what_it_imports(folder):
    meta = project(folder)
    declared = {_normalize(r) for r in meta.get("dependencies", [])}
    for extra in meta.get("optional-dependencies", {}).values():
        declared |= {_normalize(r) for r in extra}
    owners = packages_distributions()
    missing = set()
    for module in _imports(folder) - {"llbkit", "__future__"}:
        if module in sys.stdlib_module_names:
            continue
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & declared:
            missing.add(f"{module} ({', '.join(sorted(dists))})")
    assert not missing, f"{meta['name']} imports undeclared: {', '.join(sorted(missing))}"


def _linter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_every_plugin_is_held_to_the_import_contract():
    config = _linter_config()
    plugins = {f"llbkit.plugins.{p.name}" for p in DISTRIBUTIONS if p.parent.name == "plugins"}
    (forbidden,) = [c for c in config["contracts"] if c["type"] == "forbidden"]
    assert plugins <= set(config["root_packages"])
    assert plugins == set(forbidden["source_modules"])


#: what plugins may import of core (docs/plugins.md): the contracts and public helpers
PUBLIC_CORE = {
    "plugins",
    "errors",
    "llb",
    "reference",
    "patterns",
    "units",
    "ocilayout",
    "gotar",
    "known_platforms",
    "ahead",
}


def test_the_import_contract_forbids_every_other_part_of_core():
    import pkgutil

    import llbkit.core

    parts = {m.name for m in pkgutil.iter_modules(llbkit.core.__path__)} - {"__main__"}
    (forbidden,) = [c for c in _linter_config()["contracts"] if c["type"] == "forbidden"]
    assert set(forbidden["forbidden_modules"]) == {
        f"llbkit.core.{name}" for name in parts - PUBLIC_CORE
    }


def test_the_import_contract_fails_a_plugin_that_imports_a_core_internal(tmp_path):
    """What CI's lint-imports would say of a plugin reaching into the store."""
    package = tmp_path / "src" / "llbkit" / "plugins" / "exporter_sneaky"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "exporter.py").write_text(
        "from llbkit.core.errors import UserError\nfrom llbkit.core.cache.store import Store\n"
    )
    (forbidden,) = [c for c in _linter_config()["contracts"] if c["type"] == "forbidden"]
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_packages =\n    llbkit.core\n    llbkit.plugins.exporter_sneaky\n"
        "[importlinter:contract:plugins]\nname = plugins use only public core\n"
        "type = forbidden\nsource_modules = llbkit.plugins.exporter_sneaky\n"
        "forbidden_modules =\n"
        + "".join(f"    {m}\n" for m in forbidden["forbidden_modules"])
        + "allow_indirect_imports = true\n"  # as pyproject's contract: the direct import fails
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "src"), *sys.path])}
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "llbkit.plugins.exporter_sneaky.exporter -> llbkit.core.cache.store" in result.stdout
    assert "is not allowed to import llbkit.core.cache" in result.stdout
