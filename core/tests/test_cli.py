"""The ``llbkit`` command as a user runs it: a real process, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from llbkit.core import __version__


def llbkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llbkit.core", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_version():
    result = llbkit("--version")
    assert (result.returncode, result.stdout) == (0, f"llbkit {__version__}\n")


def test_the_version_in_code_is_the_installed_distributions():
    from importlib.metadata import version

    assert __version__ == version("llbkit-core")


def test_debug_plugins_lists_builtins_with_their_distribution():
    result = llbkit("debug", "plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["GROUP", "NAME", "DISTRIBUTION", "VERSION", "TARGET"]
    rows = {tuple(line.split()[:4]) for line in lines[1:]}
    for scheme in ("docker-image", "git", "http", "https", "local", "oci-layout"):
        assert ("llbkit.sources", scheme, "llbkit-core", __version__) in rows


def test_debug_plugins_imports_no_plugin(make_dist):
    site = make_dist(
        "acme-exporters",
        "1.2",
        {"llbkit.exporters": {"boom": "acme_boom:Exp"}},
        {"acme_boom": "raise SystemExit('acme_boom was imported')"},
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    result = llbkit("debug", "plugins", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {
        "group": "llbkit.exporters",
        "name": "boom",
        "distribution": "acme-exporters",
        "version": "1.2",
        "target": "acme_boom:Exp",
        "disabled": False,
    } in records
    disabled = llbkit("debug", "plugins", env={**env, "LLBKIT_DISABLE_PLUGINS": "boom"})
    assert "boom (disabled)" in disabled.stdout


def test_unknown_command_is_one_clear_line():
    result = llbkit("bulid")
    assert result.returncode == 2
    assert result.stderr == (
        "error: no such command 'bulid'. Did you mean 'build'? (see llbkit --help)\n"
    )


def test_buildkits_root_key_never_puts_llbkit_state_in_a_buildkit_root(tmp_path):
    """A buildkitd.toml shared with BuildKit names BuildKit's own state directory as ``root``;
    llbkit says it does not use it and keeps its state where ``[llbkit] root`` says."""
    buildkit_root = tmp_path / "buildkit"
    ours = tmp_path / "ours"
    config = tmp_path / "buildkitd.toml"
    config.write_text(f'root = "{buildkit_root}"\n[llbkit]\nroot = "{ours}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "--config", str(config), "du"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LLBKIT_ROOT"},
    )
    assert done.returncode == 0, done.stderr
    assert f"root = '{buildkit_root}' is BuildKit's state directory" in done.stderr
    assert not buildkit_root.exists()
    built = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "--config", str(config), "prune"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LLBKIT_ROOT"},
    )
    assert built.returncode == 0, built.stderr
    assert (ours / "state.db").exists() and not buildkit_root.exists()


def test_build_help_describes_every_output_type():
    done = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "build", "--help"], capture_output=True, text=True
    )
    text = " ".join(done.stdout.split())
    for kind in ("local", "tar", "oci", "docker", "image"):
        assert f"type={kind}," in text, kind


def test_one_plugin_registry_and_hook_manager_per_run(tmp_path, monkeypatch):
    """The CLI is the composition root: it builds the registry and hooks once, and the
    Controller, its drivers and every command use those."""
    from llbkit.core.cli.main import main
    from llbkit.core.plugins.registry import PluginRegistry
    from llbkit.sdk import llb

    made: list[str] = []
    init, hooks = PluginRegistry.__init__, PluginRegistry.hook_manager

    def counting_init(self, *args, **kwargs):
        made.append("registry")
        init(self, *args, **kwargs)

    def counting_hooks(self):
        made.append("hooks")
        return hooks(self)

    monkeypatch.setattr(PluginRegistry, "__init__", counting_init)
    monkeypatch.setattr(PluginRegistry, "hook_manager", counting_hooks)
    definition = tmp_path / "def.llb"
    state = llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))
    definition.write_bytes(state.marshal(llb.Platform()).to_bytes())
    out = tmp_path / "out"
    main(
        [
            "--root",
            str(tmp_path / "root"),
            "build",
            "--progress",
            "quiet",
            "--output",
            f"type=local,dest={out}",
            str(definition),
        ]
    )
    assert (out / "a").read_text() == "a"
    assert made == ["registry", "hooks"]


def test_a_usage_error_is_one_line_that_says_where_the_usage_is():
    result = llbkit("build", "--progress", "bogus")
    assert result.returncode == 2
    assert result.stderr == (
        "error: invalid value for '--progress': 'bogus' is not one of 'auto', 'tty', 'plain', "
        "'rawjson', 'quiet' (see llbkit build --help)\n"
    )
