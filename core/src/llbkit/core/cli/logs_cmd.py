"""``llbkit debug logs`` and ``llbkit debug info``: a build's whole log, and what answers."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llbkit.core.cli.state import open_controller
from llbkit.core.errors import UserError

__all__ = ["info", "logs"]


@click.command("logs")
@click.option(
    "--progress",
    type=click.Choice(["plain", "rawjson"]),
    default="plain",
    help="plain: as llbkit build --progress plain shows it; rawjson: one SolveStatus a line.",
)
@click.argument("ref")
@click.pass_context
def logs(ctx: click.Context, progress: str, ref: str) -> None:
    """Print build REF's whole log (a running build's until it ends), never clipped."""
    import anyio

    from llbkit.core.cli.history import find_build
    from llbkit.core.cli.progress_ui import make_display

    async def show(controller: Any) -> None:
        await find_build(controller, ref)  # a ref never built would be waited for
        display = make_display(progress, sys.stdout)
        try:
            async for status in controller.status(ref):
                display(status)
        finally:
            display.close()

    with open_controller(ctx, readonly=True) as controller:
        anyio.run(show, controller)


#: the Go templates buildctl's --format takes that llbkit answers
_JSON_FORMATS = ("json", "{{json .}}")


@click.command("info")
@click.option(
    "--format",
    "format_",
    default="",
    help="json (or buildctl's '{{json .}}'): the answer as JSON.",
)
@click.pass_context
def info(ctx: click.Context, format_: str) -> None:
    """Show what answers: the engine's package, version and revision."""
    import anyio

    if format_ and format_.strip() not in _JSON_FORMATS:
        raise UserError(f"--format {format_!r}: only json ('{{{{json .}}}}') is supported")
    with open_controller(ctx, readonly=True) as controller:
        found = anyio.run(controller.info)
    if format_:
        version = {"package": found.package, "version": found.version, "revision": found.revision}
        click.echo(json.dumps({"buildkitVersion": version}, separators=(",", ":")))
        return
    # As buildctl prints it (its tabwriter pads the label with one space).
    click.echo(f"BuildKit: {found.package} {found.version} {found.revision}")
