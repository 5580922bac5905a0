"""Opening the engine a command works on: ``--root``/``LLBKIT_ROOT`` and ``--config``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from llbkit.core.engine import Engine


@contextmanager
def open_engine(ctx: click.Context, config_path: str | None = None) -> Iterator[Engine]:
    """The embedded engine over the chosen state root, released when the block ends."""
    from llbkit.core.cache.root import default_root
    from llbkit.core.config import load_config
    from llbkit.core.engine import Engine

    options = ctx.find_root().params
    path = config_path or options.get("config_path")
    config = load_config(Path(path) if path else None)
    for key in config.unused:
        click.echo(f"warning: {config.source}: {key} has no effect in this release", err=True)
    root = options.get("root") or config.root or default_root()
    engine = Engine.open(Path(root), config)
    try:
        yield engine
    finally:
        engine.close()
