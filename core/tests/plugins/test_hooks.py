"""Hook plugins: commands added to the CLI, progress observers, and broken hook plugins."""

from __future__ import annotations

import anyio
import pytest

from llbkit.core.cli.main import main
from llbkit.core.plugins import ProgressEvent, VertexWarning, hookimpl
from llbkit.core.plugins.registry import PluginRegistry

HELLO_HOOKS = """
import click
from llbkit.core.plugins import hookimpl

@hookimpl
def llbkit_add_commands(cli):
    @cli.command("hello")
    @click.argument("who")
    def hello(who):
        '''Say hello.'''
        click.echo(f"hello {who}")
"""

CLASHING_HOOKS = """
import click
from llbkit.core.plugins import hookimpl

@hookimpl
def llbkit_add_commands(cli):
    cli.add_command(click.Command("debug", callback=lambda: None))
"""

BAD_SIGNATURE_HOOKS = """
from llbkit.core.plugins import hookimpl

@hookimpl
def llbkit_on_progress(evt):
    pass
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as exit:
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_llbkit_add_commands_adds_a_working_command(make_dist, capsys):
    make_dist(
        "acme-hello", "0.1", {"llbkit.hooks": {"hello": "acme_hello"}}, {"acme_hello": HELLO_HOOKS}
    )
    code, out, err = run_cli(capsys, "hello", "world")
    assert (code, out, err) == (0, "hello world\n", "")
    code, out, _ = run_cli(capsys, "--help")
    assert "hello" in out


def test_a_plugin_command_cannot_replace_a_builtin(make_dist, capsys):
    make_dist(
        "acme-clash",
        "0.1",
        {"llbkit.hooks": {"clash": "acme_clash"}},
        {"acme_clash": CLASHING_HOOKS},
    )
    # llbkit's own commands run without asking plugins for theirs; the clash is told where
    # the plugin's commands are asked for: listing them, or a name llbkit does not have.
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("llbkit ")
    for argv in (["--help"], ["hello"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and out == ""
        assert err.count("\n") == 1
        assert err.startswith(
            "error: plugin 'clash' adds command 'debug', which llbkit already has"
        )


def test_broken_hook_plugins_are_left_out_with_a_warning(make_dist, capsys):
    make_dist(
        "acme-broken",
        "0.1",
        {"llbkit.hooks": {"broken": "acme_broken", "badsig": "acme_badsig", "hello": "acme_hello"}},
        {
            "acme_broken": "raise ImportError('nope')",
            "acme_badsig": BAD_SIGNATURE_HOOKS,
            "acme_hello": HELLO_HOOKS,
        },
    )
    code, out, err = run_cli(capsys, "--version")
    assert code == 0 and err == ""  # llbkit's own commands do not import the hook plugins
    code, out, err = run_cli(capsys, "hello", "you")
    assert code == 0 and out == "hello you\n"
    assert "warning: hook plugin broken (acme-broken 0.1) left out: ImportError: nope" in err
    assert "warning: hook plugin badsig (acme-broken 0.1) left out:" in err
    assert "evt" in err  # pluggy names the argument the hookspec does not have


def test_disabled_hook_plugin_adds_nothing(make_dist, capsys, monkeypatch):
    make_dist(
        "acme-hello", "0.1", {"llbkit.hooks": {"hello": "acme_hello"}}, {"acme_hello": HELLO_HOOKS}
    )
    monkeypatch.setenv("LLBKIT_DISABLE_PLUGINS", "acme-hello")
    code, _, err = run_cli(capsys, "hello", "world")
    assert (code, err) == (2, "error: no such command 'hello' (see llbkit --help)\n")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    @hookimpl
    def llbkit_on_progress(self, ref: str, event: ProgressEvent) -> None:
        self.seen.append((ref, event))


class Failing:
    @hookimpl
    def llbkit_on_progress(self, ref: str, event: ProgressEvent) -> None:
        raise ValueError(f"cannot handle {type(event).__name__}")


def _build(tmp_path, registry: PluginRegistry) -> tuple[str, list[ProgressEvent]]:
    from llbkit.core.client.embedded import EmbeddedClient
    from llbkit.core.config import EngineConfig
    from llbkit.core.control import Controller
    from llbkit.core.control.status import read_journal
    from llbkit.sdk import llb
    from llbkit.sdk.testing.builds import run_build

    state = llb.merge([llb.scratch().file(llb.mkfile(f"/f{i}", 0o644, b"x")) for i in range(20)])
    data = state.marshal(llb.Platform()).to_bytes()
    config = EngineConfig(gc=False)
    with Controller.open(tmp_path / "root", config, registry) as controller:
        outcome = anyio.run(lambda: run_build(controller, EmbeddedClient(), definition=data))
    # The build's records in the order they happened, as its journal keeps them.
    return outcome.ref, read_journal(tmp_path / "root" / "history" / f"{outcome.ref}.jsonl")


def test_llbkit_on_progress_sees_every_record_in_order_despite_a_failing_observer(tmp_path):
    recorder = Recorder()
    registry = PluginRegistry.for_testing({}, hooks=[recorder, Failing()])
    ref, events = _build(tmp_path, registry)
    assert recorder.seen == [(ref, event) for event in events]
    warnings = [e for e in events if isinstance(e, VertexWarning)]
    # Said once for the build, naming the observer and what it raised.
    assert len(warnings) == 1
    assert "ValueError: cannot handle Vertex" in warnings[0].short
    assert warnings[0].short.startswith("progress observer ")


def test_hook_calls_are_traced_through_pluggy(tmp_path, capsys):
    recorder = Recorder()
    registry = PluginRegistry.for_testing({}, hooks=[recorder])
    registry._trace = True
    _build(tmp_path, registry)
    err = capsys.readouterr().err
    assert "llbkit_on_progress" in err
    assert err.count("llbkit_on_progress") >= len(recorder.seen)
