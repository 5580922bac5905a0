"""``llbkit history``: the builds the engine ran or runs (``ls``, ``inspect``, ``rm``), as
``docker buildx history`` shows them; the same embedded or through a daemon."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from llbkit.core.cli.du import _tabulate
from llbkit.core.cli.state import open_controller
from llbkit.core.errors import UserError

if TYPE_CHECKING:
    from llbkit.core.control.controller import BuildHistoryRecord

__all__ = ["find_build", "history"]

#: what a build that was stopped leaves as its error (the engine's cancellations, ^C)
_CANCELED = frozenset({"CancelledError", "Cancelled", "KeyboardInterrupt"})

_LS_HELP = """List builds: running ones first, then the newest first. Embedded: the builds that
finished on this state root; through a daemon (--addr): its running builds too.

\b
Columns:
  BUILD ID      the build's ref (what history inspect, history rm and debug logs take)
  FRONTEND      the frontend that ran (llb: a definition given directly)
  STATUS        Running, Completed, Error or Canceled
  CREATED AT    how long ago it started
  DURATION      how long it took (so far, with a + while it runs)
  CACHED/TOTAL  its steps taken from the cache, of all its steps
"""


async def find_build(controller: Any, ref: str) -> BuildHistoryRecord:
    """Build ``ref``'s record: finished, or running (then without ``completed_at``)."""
    found: BuildHistoryRecord | None = None
    async for event in controller.listen_history(ref=ref, early_exit=True):
        if event.type == "complete" or found is None:
            found = event.record
    if found is None:
        raise UserError(f"no build {ref} in the history")
    return found


def status_of(record: BuildHistoryRecord) -> str:
    if record.completed_at is None:
        return "Running"
    if not record.error:
        return "Completed"
    if record.error in _CANCELED or record.error.endswith("canceled"):
        return "Canceled"
    return "Error"


def _duration(seconds: float) -> str:
    """buildx's durations: ``4.2s`` under a minute, else ``3m  7s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    return f"{whole // 60}m {whole % 60:2d}s"


def _took(record: BuildHistoryRecord, now: float) -> str:
    if record.completed_at is None:
        return _duration(max(now - record.created_at, 0.0)) + "+"
    return _duration(max(record.completed_at - record.created_at, 0.0))


def _ago(seconds: float) -> str:
    """docker's human durations (go-units ``HumanDuration``), then ``ago``."""
    whole = int(seconds)
    minutes = whole // 60
    hours = int(seconds / 3600 + 0.5)
    if whole < 1:
        said = "Less than a second"
    elif whole == 1:
        said = "1 second"
    elif whole < 60:
        said = f"{whole} seconds"
    elif minutes == 1:
        said = "About a minute"
    elif minutes < 60:
        said = f"{minutes} minutes"
    elif hours == 1:
        said = "About an hour"
    elif hours < 48:
        said = f"{hours} hours"
    elif hours < 24 * 7 * 2:
        said = f"{hours // 24} days"
    elif hours < 24 * 30 * 2:
        said = f"{hours // 24 // 7} weeks"
    elif hours < 24 * 365 * 2:
        said = f"{hours // 24 // 30} months"
    else:
        said = f"{int(seconds / 3600) // 24 // 365} years"
    return f"{said} ago"


def _columns(rows: Sequence[Sequence[str]]) -> str:
    """docker's tables: columns padded with spaces, three between them."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _local(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@click.group("history")
def history() -> None:
    """The builds the engine ran and runs: list, inspect and delete their records (a
    build's log: llbkit debug logs REF)."""


@history.command("ls", help=_LS_HELP)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["table", "json"]),
    default="table",
    help="table, or json: one object a line.",
)
@click.pass_context
def ls(ctx: click.Context, format_: str) -> None:
    import anyio

    async def listed(controller: Any) -> list[BuildHistoryRecord]:
        records: dict[str, BuildHistoryRecord] = {}
        async for event in controller.listen_history(early_exit=True):
            if event.type == "complete" or event.record.ref not in records:
                records[event.record.ref] = event.record
        return list(records.values())

    with open_controller(ctx, readonly=True) as controller:
        records = anyio.run(listed, controller)
    now = time.time()
    records.sort(key=lambda r: (r.completed_at is None, r.created_at), reverse=True)
    if format_ == "json":
        for r in records:
            shown = {
                "ref": r.ref,
                "frontend": r.frontend,
                "status": status_of(r).lower(),
                "created_at": _rfc3339(r.created_at),
                "completed_at": _rfc3339(r.completed_at),
                "total_steps": r.num_total_steps,
                "completed_steps": r.num_completed_steps,
                "cached_steps": r.num_cached_steps,
            }
            if r.completed_at is None:
                del shown["completed_at"]
            click.echo(json.dumps(shown))
        return
    rows = [["BUILD ID", "FRONTEND", "STATUS", "CREATED AT", "DURATION", "CACHED/TOTAL"]]
    for r in records:
        rows.append(
            [
                r.ref,
                r.frontend or "llb",
                status_of(r),
                _ago(now - r.created_at),
                _took(r, now),
                f"{r.num_cached_steps}/{r.num_total_steps}",
            ]
        )
    click.echo(_columns(rows), nl=False)


@history.command("inspect")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["pretty", "json"]),
    default="pretty",
    help="pretty: a summary to read; json: the whole record.",
)
@click.argument("ref")
@click.pass_context
def inspect(ctx: click.Context, format_: str, ref: str) -> None:
    """Show build REF's record: what was asked, how it went, what it exported."""
    import anyio

    with open_controller(ctx, readonly=True) as controller:
        record = anyio.run(find_build, controller, ref)
    if format_ == "json":
        click.echo(json.dumps(vars(record), indent=2, sort_keys=True))
        return
    click.echo(_summary(record, time.time()), nl=False)


def _summary(r: BuildHistoryRecord, now: float) -> str:
    status = status_of(r)
    rows = [
        ["Ref:", r.ref],
        ["Frontend:", r.frontend or "llb (a definition given directly)"],
        ["Status:", status],
        ["Started:", _local(r.created_at)],
    ]
    if r.completed_at is not None:
        rows.append(["Completed:", _local(r.completed_at)])
    running = " (running)" if r.completed_at is None else ""
    rows.append(["Duration:", _took(r, now).rstrip("+") + running])
    if r.error:
        rows.append(["Error:", r.error])
    cached = f" ({r.num_cached_steps / r.num_total_steps:.0%} cached)" if r.num_total_steps else ""
    rows.append(["Build Steps:", f"{r.num_completed_steps}/{r.num_total_steps}{cached}"])
    parts = [_tabulate(rows)]
    if r.frontend_attrs:
        options = [[k, v] for k, v in sorted(r.frontend_attrs.items())]
        parts.append(_tabulate([["Frontend Option", "Value"], *options]))
    if r.exporters:
        exports = []
        for exporter in r.exporters:
            attrs = exporter.get("attrs") or {}
            shown = ",".join(f"{k}={v}" for k, v in sorted(attrs.items()))
            exports.append([str(exporter.get("type", "")), shown])
        parts.append(_tabulate([["Exporter", "Attributes"], *exports]))
    if r.exporter_response:
        answers = [[k, v] for k, v in sorted(r.exporter_response.items())]
        parts.append(_tabulate([["Exporter Response", "Value"], *answers]))
    return "\n".join(parts)


@history.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.pass_context
def rm(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Delete finished builds' records and logs."""
    import anyio

    async def forget(controller: Any) -> None:
        for ref in refs:
            await controller.forget_history(ref)

    with open_controller(ctx) as controller:
        anyio.run(forget, controller)
