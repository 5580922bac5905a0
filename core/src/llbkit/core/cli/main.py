"""Entry point of the ``llbkit`` command: the composition root that wires plugins to commands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from llbkit.core import __version__
from llbkit.core.cli.engine import Plugins, exit_code, without_httpx_cli
from llbkit.core.errors import PluginError, UserError

if TYPE_CHECKING:
    from llbkit.core.plugins.registry import PluginRegistry


#: llbkit's own commands, imported only when run (or listed by --help): a build must not pay
#: for importing du, history and debug.
BUILTIN_COMMANDS = {
    "build": "llbkit.core.cli.build:build",
    "debug": "llbkit.core.cli.debug:debug",
    "du": "llbkit.core.cli.du:du",
    "history": "llbkit.core.cli.history:history",
    "prune": "llbkit.core.cli.du:prune",
}


class RootGroup(click.Group):
    """The ``llbkit`` group; refuses a second command under a name that is taken.

    Plugins' commands (``llbkit_add_commands``) are asked for only when a name is not one of
    llbkit's own, or when commands are listed: a build does not import the hook plugins to
    find out what else the CLI could do.
    """

    adding_for: str = "llbkit"
    plugins: Plugins

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = dict(BUILTIN_COMMANDS)
        self._plugin_commands_added = False

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name in self.commands or name in self._lazy:
            raise PluginError(
                f"plugin {self.adding_for!r} adds command {name!r}, which llbkit already has; "
                "rename it or disable the plugin with LLBKIT_DISABLE_PLUGINS"
            )
        super().add_command(cmd, name)

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from llbkit.core.plugins.hooks import HookCaller

        def announce(plugin: str) -> None:
            self.adding_for = plugin

        try:
            HookCaller(self.plugins.hooks).add_commands(self, announce)
        finally:
            self.adding_for = "llbkit"

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return sorted({*self.commands, *self._lazy})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as err:  # suggest from the lazy names too
            raise click.exceptions.NoSuchCommand(
                err.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.pop(cmd_name, None)
        if target is not None:
            from llbkit.core.plugins.entrypoints import load_target

            click.Group.add_command(self, load_target(target), cmd_name)
        elif cmd_name not in self.commands:
            self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)


def build_cli(registry: PluginRegistry | None = None) -> RootGroup:
    """Return a fresh CLI: built-in commands, and those plugins add (``llbkit_add_commands``)
    when they are asked for.

    :param registry: the plugins to consult; by default what is installed, minus
        ``LLBKIT_DISABLE_PLUGINS``.
    """
    group = RootGroup(
        name="llbkit",
        help="llbkit: BuildKit's builds, run from Python.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    click.version_option(
        __version__, "--version", prog_name="llbkit", message="%(prog)s %(version)s"
    )(group)
    click.option(
        "--root",
        envvar="LLBKIT_ROOT",
        type=click.Path(file_okay=False),
        help="The state root (default: /var/lib/llbkit as root).",
    )(group)
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, exists=True),
        help="The engine's configuration (buildkitd.toml keys).",
    )(group)
    click.option(
        "--addr",
        envvar="BUILDKIT_HOST",
        default="",
        help="A daemon to build on (unix://PATH, tcp://HOST:PORT); default: embedded.",
    )(group)
    click.option("--tlsservername", default="", help="The name the daemon's certificate has.")(
        group
    )
    click.option("--tlscacert", default="", help="CA certificate to verify the daemon.")(group)
    click.option("--tlscert", default="", help="Client certificate (mutual TLS).")(group)
    click.option("--tlskey", default="", help="Client key (mutual TLS).")(group)
    click.option("--tlsdir", default="", help="A directory with ca.pem, cert.pem and key.pem.")(
        group
    )
    group.plugins = Plugins(registry)
    return group


def main(argv: list[str] | None = None, registry: PluginRegistry | None = None) -> None:
    """Run the CLI; a ``UserError`` prints ``error: <message>`` and exits 1 without a traceback."""
    without_httpx_cli()
    try:
        cli = build_cli(registry)
        cli.main(args=argv, prog_name="llbkit", standalone_mode=False, obj=cli.plugins)
    except click.exceptions.Abort:
        click.echo("error: canceled", err=True)
        sys.exit(130)
    except click.UsageError as err:
        # One line, as every other error: what was wrong, then where the usage is.
        path = err.ctx.command_path if err.ctx is not None else "llbkit"
        click.echo(f"error: {_sentence(err.format_message())} (see {path} --help)", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"error: {_sentence(err.format_message())}", err=True)
        sys.exit(err.exit_code)
    except (UserError, KeyboardInterrupt, OSError) as err:
        code = exit_code(err)
        if code is None:
            raise
        sys.exit(code)


def run() -> NoReturn:
    """The ``llbkit`` command: :func:`main`, then out of the process without tearing the
    interpreter down. Freeing every module and object costs about 50 ms, a tenth of a warm
    build, and changes nothing outside: exit handlers and finalizers still run, threads are
    waited for and the standard streams flushed, as a normal exit does."""
    from llbkit.core.cachedir import cache_dir
    from llbkit.core.cli.codecache import install

    install(cache_dir())  # before the classes of the command are made
    full()


def full() -> NoReturn:
    """:func:`main`, then out of the process (the codecache installed)."""
    from llbkit.core.cli.exiting import leave, will_leave

    will_leave()
    try:
        main()
        code: object = 0
    except SystemExit as done:
        code = done.code
    leave(code)


def _sentence(message: str) -> str:
    """Click's message as the rest of llbkit's errors read: lower case, on one line."""
    text = " ".join(message.split()).rstrip(".")
    return text[:1].lower() + text[1:]


if __name__ == "__main__":
    main()
