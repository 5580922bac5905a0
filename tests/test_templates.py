"""The plugin templates: one per driver group, and each becomes, by the README's own commands, a
plugin installed from a folder outside this repository that passes its conformance kit."""

from __future__ import annotations

import ast
import json
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


def readme_commands() -> list[str]:
    """The first shell block of the README's "Writing a plugin" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Writing a plugin") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    return block[: block.index("```")].splitlines()


#: kit checks a template may skip: what its plugin says it does not do
DECLARED_SKIPS = {"the worker declares no terminal, standard input or exec"}


@pytest.mark.slow
def test_readme_commands_make_an_installed_working_plugin_of_each_kind(tmp_path):
    uv = ROOT / ".tools" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("no .tools/bin/uv: run scripts/setup.sh")
    outside = tmp_path / "outside"
    outside.mkdir()
    assert ROOT not in outside.parents
    venv = outside / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    # setup.sh filled uv's cache with everything these installs need: no network, no waiting.
    env.update(UV_OFFLINE="1", LLBKIT_ROOT=str(outside / "state"), UV_PROJECT_ENVIRONMENT=str(venv))
    env["PYTEST_ADDOPTS"] = "-rs"  # every skip says why

    def run(args: list[str], **kwargs: object) -> str:
        result = subprocess.run(args, capture_output=True, text=True, env=env, **kwargs)
        assert result.returncode == 0, f"{args}\n{result.stdout[-4000:]}{result.stderr[-3000:]}"
        return result.stdout

    # A venv as a third party has it: llbkit-core and llbkit-sdk[testing], no other plugin.
    sync = ["sync", "-q", "--frozen", "--no-dev", "--package", "llbkit-sdk", "--extra", "testing"]
    run([str(uv), *sync, "--project", str(ROOT), "--python", sys.executable])
    commands = readme_commands()
    assert commands[0].startswith("template=")
    body = "\n".join(commands[1:]).replace(".venv/bin/", f"{venv}/bin/")
    for template, (kind, name, cap, _) in KINDS.items():
        dest = outside / f"llbkit-{kind}-{name}"
        script = f"template={template} kind={kind} name={name} Name={cap} dir={dest}\n{body}"
        out = run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT)
        assert re.search(r"\d+ passed", out) and " failed" not in out, out[-3000:]
        if os.geteuid() == 0 and shutil.which("runc") and shutil.which("busybox"):
            # Here every kit check runs, but those a template declares it does not support.
            reasons = set(re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", out, re.M))
            assert reasons <= DECLARED_SKIPS, out[-3000:]
        assert "<REPLACE:" not in "".join(p.read_text() for p in dest.rglob("*.py"))

    def listed() -> list[dict[str, object]]:
        command = [f"{venv}/bin/llbkit", "debug", "plugins", "--format", "json"]
        return [json.loads(line) for line in run(command).splitlines()]

    probe = "from llbkit.core.plugins.registry import PluginRegistry\nregistry = PluginRegistry()\n"
    plugins = listed()
    for kind, name, _, group in KINDS.values():
        found = [p for p in plugins if p["group"] == group and p["name"] == name]
        assert [(p["distribution"], p["disabled"]) for p in found] == [
            (f"llbkit-{kind}-{name}", False)
        ]
        probe += f"print(registry.load_driver({group!r}, {name!r}).__module__)\n"
    # Loading checks the declared contract version too.
    loaded = [
        module.rsplit(".", 1)[0] for module in run([f"{venv}/bin/python", "-c", probe]).split()
    ]
    assert loaded == [f"llbkit.plugins.{kind}_{name}" for kind, name, _, _ in KINDS.values()]

    # The three LLBKIT_DISABLE_PLUGINS tokens the README names.
    env["LLBKIT_DISABLE_PLUGINS"] = "listing,llbkit.frontends:oneline,llbkit-cache-dir"
    assert {(p["group"], p["name"]) for p in listed() if p["disabled"]} == {
        ("llbkit.exporters", "listing"),
        ("llbkit.frontends", "oneline"),
        ("llbkit.cache_backends", "dir"),
    }

    # That venv is uv's, without pip: the install hint must name uv and this venv's python.
    hint = "from llbkit.core.errors import install_command; print(install_command('llbkit-x'))"
    assert run([f"{venv}/bin/python", "-c", hint]).strip() == (
        f"uv pip install --python {venv}/bin/python llbkit-x"
    )
