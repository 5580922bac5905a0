"""The plugin loader against real (deliberately broken) installed distributions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.errors import (
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PluginVersionError,
    UnknownPluginError,
    install_command,
)
from llbkit.core.plugins.registry import PluginRegistry

GOOD_EXPORTER = """
class GoodExporter:
    api_version = 2

    def __init__(self, ctx):
        self.ctx = ctx
"""

EXP = "llbkit.exporters"


def test_unknown_name_lists_installed_and_names_distribution_to_install(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter"}},
        {"acme_good": GOOD_EXPORTER},
    )
    registry = PluginRegistry(known={(EXP, "s3ish"): "llbkit-exporter-s3ish"})
    with pytest.raises(UnknownPluginError) as err:
        registry.load_driver(EXP, "s3ish")
    message = str(err.value)
    assert message.startswith("unknown exporter 's3ish'; installed: ")
    assert "acme" in message
    assert message.endswith(f"; install it with: {install_command('llbkit-exporter-s3ish')}")
    assert "\n" not in message


def _environment(monkeypatch, tmp_path, *, pip: bool, cfg: str | None):
    """Pretend llbkit runs from a venv at ``tmp_path`` with or without pip, made by uv or not."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if pip else None) if name == "pip" else real(name, *a),
    )
    if cfg is not None:
        (tmp_path / "pyvenv.cfg").write_text(cfg)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my env" / "bin" / "python"))


def test_install_hint_is_pip_where_pip_is_importable(monkeypatch, tmp_path):
    _environment(monkeypatch, tmp_path, pip=True, cfg="home = /usr/bin\nuv = 0.13.9\n")
    assert install_command("llbkit-cache-s3") == "pip install llbkit-cache-s3"


def test_install_hint_is_uv_with_this_python_in_a_uv_venv_without_pip(monkeypatch, tmp_path):
    _environment(monkeypatch, tmp_path, pip=False, cfg="home = /usr/bin\nuv = 0.13.9\n")
    python = tmp_path / "my env" / "bin" / "python"
    assert install_command("llbkit-cache-s3") == (
        f"uv pip install --python '{python}' llbkit-cache-s3"
    )
    err = UnknownPluginError("cache backend", "s3", ["local"], "llbkit-cache-s3")
    assert str(err).endswith(f"install it with: uv pip install --python '{python}' llbkit-cache-s3")


def test_install_hint_falls_back_to_pip_outside_a_uv_venv(monkeypatch, tmp_path):
    _environment(monkeypatch, tmp_path, pip=False, cfg="home = /usr/bin\n")
    assert install_command("llbkit-cache-s3") == "pip install llbkit-cache-s3"
    _environment(monkeypatch, tmp_path / "nowhere", pip=False, cfg=None)
    assert install_command("llbkit-cache-s3") == "pip install llbkit-cache-s3"


def test_install_hint_runs_in_the_environment_it_is_printed_in():
    """This test's own environment: whichever command the hint gives can install there."""
    import importlib.util
    from pathlib import Path

    command = install_command("x")
    if importlib.util.find_spec("pip") is not None:
        assert command == "pip install x"
    elif "uv =" in (Path(sys.prefix) / "pyvenv.cfg").read_text():
        import shlex
        import shutil

        uv, *rest = shlex.split(command)
        assert rest == ["pip", "install", "--python", sys.executable, "x"]
        # Typed where it is printed, it runs: the checkout's uv, or one on PATH.
        assert Path(uv).is_file() or shutil.which(uv), command
    else:
        assert command == "pip install x"  # an environment neither pip nor uv made


def test_unknown_name_without_known_distribution_says_only_what_is_installed(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter"}},
        {"acme_good": GOOD_EXPORTER},
    )
    with pytest.raises(UnknownPluginError) as err:
        PluginRegistry(known={}).load_driver(EXP, "ocii")
    assert "pip install" not in str(err.value)
    assert "'ocii'" in str(err.value)


def test_loads_only_the_plugin_asked_for(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter", "other": "acme_other:Other"}},
        {"acme_good": GOOD_EXPORTER, "acme_other": "raise RuntimeError('must not be imported')"},
    )
    registry = PluginRegistry()
    factory = registry.load_driver(EXP, "acme")
    assert factory.__name__ == "GoodExporter"
    assert "acme_other" not in sys.modules
    driver = registry.create_driver(EXP, "acme", config={"k": "v"})
    assert driver.ctx.name == "acme"
    assert driver.ctx.distribution == "acme-exporters 1.2"
    assert driver.ctx.config == {"k": "v"}


def test_a_driver_has_a_cache_directory_of_its_own_unless_caching_is_off(
    make_dist: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter"}},
        {"acme_good": GOOD_EXPORTER},
    )
    monkeypatch.setenv("LLBKIT_PLUGIN_CACHE", str(tmp_path))
    driver = PluginRegistry().create_driver(EXP, "acme")
    assert driver.ctx.cache_dir == tmp_path / "drivers" / EXP / "acme"
    monkeypatch.setenv("LLBKIT_PLUGIN_CACHE", "off")
    assert PluginRegistry().create_driver(EXP, "acme").ctx.cache_dir is None


def test_listing_imports_nothing(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"boom": "acme_boom:Exp"}},
        {"acme_boom": "raise RuntimeError('imported')"},
    )
    infos = [i for i in PluginRegistry().plugins(EXP) if i.name == "boom"]
    assert [(i.distribution, i.version, i.value) for i in infos] == [
        ("acme-exporters", "1.2", "acme_boom:Exp")
    ]
    assert "acme_boom" not in sys.modules


def test_import_failure_names_plugin_distribution_and_cause(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"boom": "acme_boom:Exp"}},
        {"acme_boom": "import no_such_module_xyz"},
    )
    with pytest.raises(PluginLoadError) as err:
        PluginRegistry().load_driver(EXP, "boom")
    message = str(err.value)
    assert "boom (acme-exporters 1.2)" in message
    assert "ModuleNotFoundError" in message and "no_such_module_xyz" in message


def test_missing_attribute_is_a_load_error(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"gone": "acme_good:NoSuchClass"}},
        {"acme_good": GOOD_EXPORTER},
    )
    with pytest.raises(PluginLoadError) as err:
        PluginRegistry().load_driver(EXP, "gone")
    assert "NoSuchClass" in str(err.value)


def test_two_distributions_with_one_name_is_a_conflict_naming_both(make_dist):
    make_dist(
        "acme-a", "1.0", {EXP: {"dup": "acme_good:GoodExporter"}}, {"acme_good": GOOD_EXPORTER}
    )
    make_dist("acme-b", "2.0", {EXP: {"dup": "acme_good:GoodExporter"}})
    with pytest.raises(PluginConflictError) as err:
        PluginRegistry().load_driver(EXP, "dup")
    assert "dup (acme-a 1.0)" in str(err.value) and "dup (acme-b 2.0)" in str(err.value)


def test_disabling_one_of_two_with_a_name_lets_the_other_be_used(make_dist):
    """A plugin replaces a built-in by disabling it: the name is no longer a conflict."""
    make_dist("acme-a", "1.0", {EXP: {"dup": "acme_a:GoodExporter"}}, {"acme_a": GOOD_EXPORTER})
    make_dist(
        "acme-b",
        "2.0",
        {EXP: {"dup": "acme_b:GoodExporter"}},
        {"acme_b": GOOD_EXPORTER},
    )
    registry = PluginRegistry.from_env({"LLBKIT_DISABLE_PLUGINS": "acme-a"})
    driver = registry.create_driver(EXP, "dup")
    assert driver.ctx.distribution == "acme-b 2.0"
    assert type(driver).__module__ == "acme_b"


def test_contract_version_mismatch_is_refused(make_dist):
    source = GOOD_EXPORTER.replace("api_version = 2", "api_version = 1")
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"future": "acme_future:GoodExporter"}},
        {"acme_future": source},
    )
    with pytest.raises(PluginVersionError) as err:
        PluginRegistry().load_driver(EXP, "future")
    assert "targets contract v1, core provides v2" in str(err.value)


def test_missing_contract_version_is_refused_with_the_fix(make_dist):
    make_dist(
        "acme-exporters", "1.2", {EXP: {"old": "acme_old:Exp"}}, {"acme_old": "class Exp: pass"}
    )
    with pytest.raises(PluginLoadError) as err:
        PluginRegistry().load_driver(EXP, "old")
    assert "api_version = 2" in str(err.value)


def test_disabled_plugins_cannot_be_loaded_but_are_listed(make_dist):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter"}},
        {"acme_good": GOOD_EXPORTER},
    )
    for spec in ("acme", f"{EXP}:acme", "acme-exporters", "*"):
        registry = PluginRegistry.from_env({"LLBKIT_DISABLE_PLUGINS": spec})
        assert "acme" not in registry.names(EXP)
        assert [i.disabled for i in registry.plugins(EXP) if i.name == "acme"] == [True]
        with pytest.raises(PluginError) as err:
            registry.load_driver(EXP, "acme")
        assert "disabled by LLBKIT_DISABLE_PLUGINS" in str(err.value)
        # The message names the token that matched, the one to take out.
        assert f"remove {spec!r} from it" in str(err.value)


def test_core_builtins_cannot_be_disabled():
    registry = PluginRegistry.from_env({"LLBKIT_DISABLE_PLUGINS": "*,local,llbkit-core"})
    assert "local" in registry.names("llbkit.sources")
    assert registry.load_driver("llbkit.sources", "local").__name__ == "LocalSource"


def test_test_instance_uses_only_what_it_is_given():
    class Fake:
        api_version = 2

        def __init__(self, ctx):
            self.ctx = ctx

    registry = PluginRegistry.for_testing({EXP: {"fake": Fake}})
    assert registry.names(EXP) == ["fake"]
    assert registry.names("llbkit.sources") == []
    assert isinstance(registry.create_driver(EXP, "fake"), Fake)
    with pytest.raises(UnknownPluginError):
        registry.load_driver(EXP, "oci")


def test_trace_prints_loads(make_dist, capsys):
    make_dist(
        "acme-exporters",
        "1.2",
        {EXP: {"acme": "acme_good:GoodExporter"}},
        {"acme_good": GOOD_EXPORTER},
    )
    PluginRegistry.from_env({"LLBKIT_TRACE_PLUGINS": "1"}).load_driver(EXP, "acme")
    assert "loading exporter acme (acme-exporters 1.2)" in capsys.readouterr().err
