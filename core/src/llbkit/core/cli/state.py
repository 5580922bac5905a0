"""Opening the engine a command works on: ``--root``/``LLBKIT_ROOT`` and ``--config``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llbkit.core.errors import UserError

if TYPE_CHECKING:
    import pluggy

    from llbkit.core.config import EngineConfig
    from llbkit.core.control import Controller
    from llbkit.core.plugins.registry import PluginRegistry
    from llbkit.core.remote.connect import Endpoint


@contextmanager
def open_controller(
    ctx: click.Context, config_path: str | None = None, *, readonly: bool = False
) -> Iterator[Controller]:
    """The embedded Controller over the chosen state root, released when the block ends.

    A root another process is building on is waited for, with a line saying so; a
    ``readonly`` one (for ``du``) is read beside it without waiting.
    """
    remote = endpoint(ctx)
    if remote is not None:
        if config_path:
            raise UserError("--config configures the embedded engine; a daemon reads its own")
        from llbkit.core.remote.controller import RemoteController

        yield RemoteController(remote)  # type: ignore[misc]
        return
    from llbkit.core.control import Controller

    config = load(ctx, config_path)
    root = root_path(ctx, config)
    registry, hooks = plugins(ctx)
    if readonly:
        controller = Controller.open_readonly(root, config, registry, hooks)
    else:
        controller = Controller.open(
            root, config, registry, hooks, wait=lambda line: click.echo(line, err=True)
        )
    try:
        if not readonly:
            _reap(controller)
        yield controller
    finally:
        controller.close()


def _reap(controller: Controller) -> None:
    """This process owns the root now: stop what a killed owner left running, and say so."""
    import anyio

    if controller.store.root.recovered:
        click.echo(
            "llbkit: cleaned up what a killed build left: "
            + ", ".join(controller.store.root.recovered),
            err=True,
        )

    try:
        reaped = anyio.run(controller.drivers.reap_orphans)
    except UserError as err:  # e.g. runc gone since: a build that runs a process says so too
        click.echo(
            f"llbkit: warning: cannot stop what a killed build left running: {err}", err=True
        )
        return
    if reaped:
        click.echo(
            f"llbkit: stopped {len(reaped)} container(s) a killed build left running: "
            + ", ".join(reaped),
            err=True,
        )


def endpoint(ctx: click.Context) -> Endpoint | None:
    """The daemon ``--addr``/``BUILDKIT_HOST`` names, with its TLS flags; ``None``: embedded."""
    options = ctx.find_root().params
    address = options.get("addr") or ""
    if not address:
        return None
    from llbkit.core.remote.connect import Endpoint

    return Endpoint(
        address,
        ca=options.get("tlscacert") or "",
        cert=options.get("tlscert") or "",
        key=options.get("tlskey") or "",
        server_name=options.get("tlsservername") or "",
        tls_dir=options.get("tlsdir") or "",
    )


def load(ctx: click.Context, config_path: str | None = None) -> EngineConfig:
    """The config file (``--config`` of the command or of ``llbkit``), warnings printed once."""
    from llbkit.core.config import load_config

    options = ctx.find_root().params
    path = config_path or options.get("config_path")
    config = load_config(Path(path) if path else None)
    for key in config.unused:
        click.echo(f"warning: {config.source}: {key} has no effect in this release", err=True)
    for line in config.warnings:
        click.echo(f"warning: {line}", err=True)
    return config


def root_path(ctx: click.Context, config: EngineConfig) -> Path:
    from llbkit.core.cache.root import default_root

    options = ctx.find_root().params
    return Path(options.get("root") or config.root or default_root())


def plugins(ctx: click.Context) -> tuple[PluginRegistry, pluggy.PluginManager]:
    """The registry and hook manager the CLI's composition root built (once per process)."""
    found = ctx.find_root().obj
    return found.registry, found.hooks
