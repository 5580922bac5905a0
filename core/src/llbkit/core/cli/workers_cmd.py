"""``llbkit debug workers``: the enabled workers, as ``buildctl debug workers`` shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import click

from llbkit.core.cli.du import _tabulate
from llbkit.core.cli.state import open_controller
from llbkit.core.units import format_bytes

if TYPE_CHECKING:
    from llbkit.core.control.controller import WorkerRecord


def _duration(seconds: float) -> str:
    """Go's time.Duration formatting for whole seconds (``48h0m0s``)."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@click.command("workers")
@click.option("--verbose", "-v", is_flag=True, help="Labels and GC policy too.")
@click.pass_context
def workers(ctx: click.Context, verbose: bool) -> None:
    """Show the workers that run exec steps (the default, which runs builds, first)."""
    with open_controller(ctx) as controller:
        found = anyio.run(controller.workers)
    if not verbose:
        rows = [["ID", "PLATFORMS"]]
        rows += [[w.id, ",".join(str(p) for p in w.platforms)] for w in found]
        click.echo(_tabulate(rows), nl=False)
        return
    # buildctl ends each worker's block with a blank line.
    click.echo("".join(_verbose(worker) + "\n" for worker in found), nl=False)


def _verbose(worker: WorkerRecord) -> str:
    from llbkit.core import __version__

    lines = [
        f"ID:\t{worker.id}",
        f"Platforms:\t{','.join(str(p) for p in worker.platforms)}",
        f"BuildKit:\tllbkit {__version__} ",
        "Labels:",
    ]
    lines += [f"\t{k}:\t{v}" for k, v in sorted(worker.labels.items())]
    for n, rule in enumerate(worker.gc_policy):
        lines.append(f"GC Policy rule#{n}:")
        lines.append(f"\tAll:\t{str(rule.all).lower()}")
        if rule.filters:
            lines.append(f"\tFilters:\t{' '.join(rule.filters)}")
        if rule.keep_duration:
            lines.append(f"\tKeep Duration:\t{_duration(rule.keep_duration)}")
        if rule.keep_bytes:
            lines.append(f"\tKeep Bytes:\t{format_bytes(rule.keep_bytes, 'g')}")
    return "\n".join(lines) + "\n"
