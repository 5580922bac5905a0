"""Opening the engine a command works on: ``--root``/``LLBKIT_ROOT`` and ``--config``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from llbkit.core.errors import UserError

if TYPE_CHECKING:
    import pluggy

    from llbkit.core.control import Controller
    from llbkit.core.plugins.registry import PluginRegistry
    from llbkit.core.remote.connect import Endpoint


@contextmanager
def open_controller(
    ctx: click.Context,
    config_path: str | None = None,
    *,
    readonly: bool = False,
    reap: bool = True,
) -> Iterator[Controller]:
    """The Controller the command works on: a daemon's (``--addr``), else the embedded one
    over the chosen state root (:func:`~llbkit.core.cli.engine.open_engine`), released when
    the block ends."""
    remote = endpoint(ctx)
    if remote is not None:
        if config_path:
            raise UserError("--config configures the embedded engine; a daemon reads its own")
        from llbkit.core.remote.controller import RemoteController

        yield RemoteController(remote)  # type: ignore[misc]
        return
    from llbkit.core.cli.engine import open_engine

    options = ctx.find_root().params
    with open_engine(
        options.get("root"),
        config_path or options.get("config_path"),
        ctx.find_root().obj,
        readonly=readonly,
        reap=reap,
    ) as controller:
        yield controller


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


def plugins(ctx: click.Context) -> tuple[PluginRegistry, pluggy.PluginManager]:
    """The registry and hook manager the CLI's composition root built (once per process)."""
    found = ctx.find_root().obj
    return found.registry, found.hooks
