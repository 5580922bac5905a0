"""``llbkit debug``: look inside definitions and the installed plugins."""

from __future__ import annotations

import click

from llbkit.core.cli.dump_llb import dump_llb
from llbkit.core.cli.plugins_cmd import plugins


@click.group()
def debug() -> None:
    """Inspect LLB definitions and the installed plugins."""


debug.add_command(dump_llb)
debug.add_command(plugins)
