"""``llbkit debug``: look inside definitions and the installed plugins."""

from __future__ import annotations

import click

from llbkit.core.cli.dump_llb import dump_llb
from llbkit.core.cli.plugins_cmd import plugins
from llbkit.core.cli.workers_cmd import workers


@click.group()
def debug() -> None:
    """Inspect LLB definitions, the installed plugins and the worker."""


debug.add_command(dump_llb)
debug.add_command(plugins)
debug.add_command(workers)
