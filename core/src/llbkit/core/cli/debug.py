"""``llbkit debug``: look inside definitions, the installed plugins, the worker, the engine and
a build's log."""

from __future__ import annotations

import click

from llbkit.core.cli.dump_llb import dump_llb
from llbkit.core.cli.logs_cmd import info, logs
from llbkit.core.cli.plugins_cmd import plugins
from llbkit.core.cli.workers_cmd import workers


@click.group()
def debug() -> None:
    """Inspect LLB definitions, the installed plugins, the worker, the engine, build logs."""


debug.add_command(dump_llb)
debug.add_command(info)
debug.add_command(logs)
debug.add_command(plugins)
debug.add_command(workers)
