"""``llbkit debug workers``: the configured worker, as ``buildctl debug workers`` shows it."""

from __future__ import annotations

import anyio
import click

from llbkit.core.cli.du import _tabulate
from llbkit.core.cli.state import open_controller
from llbkit.core.units import format_bytes


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
    """Show the worker that runs exec steps."""
    with open_controller(ctx) as controller:
        worker = anyio.run(controller.workers)[0]
    worker_id = worker.id
    platforms = ",".join(str(p) for p in worker.platforms)
    rules = worker.gc_policy
    if not verbose:
        click.echo(_tabulate([["ID", "PLATFORMS"], [worker_id, platforms]]), nl=False)
        return
    from llbkit.core import __version__

    lines = [
        f"ID:\t{worker_id}",
        f"Platforms:\t{platforms}",
        f"BuildKit:\tllbkit {__version__} ",
        "Labels:",
    ]
    lines += [f"\t{k}:\t{v}" for k, v in sorted(worker.labels.items())]
    for n, rule in enumerate(rules):
        lines.append(f"GC Policy rule#{n}:")
        lines.append(f"\tAll:\t{str(rule.all).lower()}")
        if rule.filters:
            lines.append(f"\tFilters:\t{' '.join(rule.filters)}")
        if rule.keep_duration:
            lines.append(f"\tKeep Duration:\t{_duration(rule.keep_duration)}")
        if rule.keep_bytes:
            lines.append(f"\tKeep Bytes:\t{format_bytes(rule.keep_bytes, 'g')}")
    click.echo("\n".join(lines) + "\n")
