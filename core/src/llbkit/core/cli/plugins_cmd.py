"""``llbkit debug plugins``: what is installed, from metadata alone (nothing is imported)."""

from __future__ import annotations

import json

import click


@click.command("plugins")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def plugins(ctx: click.Context, fmt: str) -> None:
    """List every plugin: group, name, distribution and version, without importing any."""
    from llbkit.core.cli.state import plugins as composed
    from llbkit.core.plugins.registry import DRIVER_GROUPS, HOOKS_GROUP

    registry, _ = composed(ctx)
    rows = [info for group in (*DRIVER_GROUPS, HOOKS_GROUP) for info in registry.plugins(group)]
    if fmt == "json":
        for info in rows:
            record = {
                "group": info.group,
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "target": info.value,
                "disabled": info.disabled,
            }
            click.echo(json.dumps(record))
        return
    header = ("GROUP", "NAME", "DISTRIBUTION", "VERSION", "TARGET")
    table = [header] + [
        (
            i.group,
            i.name + (" (disabled)" if i.disabled else ""),
            i.distribution,
            i.version,
            i.value,
        )
        for i in rows
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
