"""``llbkit du`` and ``llbkit prune``: what the store holds, and freeing it, as buildctl shows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click

from llbkit.core.cli.state import open_controller
from llbkit.core.units import format_bytes as units
from llbkit.core.units import parse_duration

__all__ = ["du", "prune"]


def _tabulate(rows: Sequence[Sequence[str]]) -> str:
    """Go's tabwriter (minwidth 1, tabwidth 8, padding 1, padded with tabs), as buildctl uses."""
    widths: dict[int, int] = {}
    for row in rows:
        for n, cell in enumerate(row[:-1]):
            widths[n] = max(widths.get(n, 0), len(cell) + 1)
    lines = []
    for row in rows:
        out = ""
        for n, cell in enumerate(row):
            if n == len(row) - 1:
                out += cell
                break
            width = -(-widths[n] // 8) * 8
            out += cell + "\t" * (-(-(width - len(cell)) // 8))
        lines.append(out.rstrip("\t") if not row[-1] else out)
    return "\n".join(lines) + "\n"


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def _table(records: Sequence[object]) -> str:
    rows = [["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]]
    for r in records:
        rid = r.id + ("*" if r.mutable else "")  # type: ignore[attr-defined]
        size = units(r.size) + ("*" if r.shared else "")  # type: ignore[attr-defined]
        rows.append(
            [
                f"{rid:<71}",
                f"{'true' if not r.in_use else 'false':<11}",  # type: ignore[attr-defined]
                size,
                "",
            ]
        )
    return _tabulate(rows)


def _verbose(records: Sequence[object]) -> str:
    out = []
    for r in records:
        rows = [["ID:", r.id]]  # type: ignore[attr-defined]
        if r.parents:  # type: ignore[attr-defined]
            rows.append(["Parents:", ";".join(r.parents)])  # type: ignore[attr-defined]
        rows += [
            ["Created at:", _when(r.created)],  # type: ignore[attr-defined]
            ["Mutable:", str(r.mutable).lower()],  # type: ignore[attr-defined]
            ["Reclaimable:", str(not r.in_use).lower()],  # type: ignore[attr-defined]
            ["Shared:", str(r.shared).lower()],  # type: ignore[attr-defined]
            ["Size:", units(r.size)],  # type: ignore[attr-defined]
        ]
        if r.description:  # type: ignore[attr-defined]
            rows.append(["Description:", r.description])  # type: ignore[attr-defined]
        rows.append(["Usage count:", str(r.usage_count)])  # type: ignore[attr-defined]
        if r.last_used is not None:  # type: ignore[attr-defined]
            rows.append(["Last used:", _when(r.last_used)])  # type: ignore[attr-defined]
        rows.append(["Type:", r.record_type])  # type: ignore[attr-defined]
        out.append(_tabulate(rows))
    return "\n".join(out) + ("\n" if out else "")


def _summary(records: Sequence[object], *, total_only: bool = False) -> str:
    total = sum(r.size for r in records if r.size > 0)  # type: ignore[attr-defined]
    if total_only:
        return _tabulate([["Total:", units(total)]])
    reclaimable = sum(r.size for r in records if r.size > 0 and not r.in_use)  # type: ignore[attr-defined]
    shared = sum(r.size for r in records if r.shared)  # type: ignore[attr-defined]
    rows = []
    if shared:
        rows += [["Shared:", units(shared)], ["Private:", units(total - shared)]]
    rows += [["Reclaimable:", units(reclaimable)], ["Total:", units(total)]]
    return _tabulate(rows)


@click.command("du")
@click.option(
    "--filter",
    "-f",
    "filters",
    multiple=True,
    help="Only records matching, e.g. type==source.local or description~=foo.",
)
@click.option("--verbose", "-v", is_flag=True, help="Every field of every record.")
@click.pass_context
def du(ctx: click.Context, filters: tuple[str, ...], verbose: bool) -> None:
    """Show what the build cache holds and the disk it uses."""
    import anyio

    from llbkit.core.cache.usage import parse_filters

    parse_filters(filters)
    with open_controller(ctx, readonly=True) as controller:
        records = anyio.run(controller.disk_usage, filters)
    # As buildkitd answers: the largest first.
    records.sort(key=lambda r: (r.size, r.id), reverse=True)
    click.echo(_verbose(records) if verbose else _table(records), nl=False)
    if not filters:
        click.echo(_summary(records), nl=False)


@click.command("prune")
@click.option("--filter", "-f", "filters", multiple=True, help="Only records matching.")
@click.option("--all", "all_", is_flag=True, help="Include internal and frontend records.")
@click.option("--keep-duration", default="", help="Keep records used within this duration.")
@click.option(
    "--keep-storage",
    default=0.0,
    type=float,
    help="Keep this many MB of records (least recently used go first).",
)
@click.option("--verbose", "-v", is_flag=True, help="Every field of every removed record.")
@click.pass_context
def prune(
    ctx: click.Context,
    filters: tuple[str, ...],
    all_: bool,
    keep_duration: str,
    keep_storage: float,
    verbose: bool,
) -> None:
    """Remove unused records from the build cache."""
    import anyio

    from llbkit.core.cache.usage import parse_filters
    from llbkit.core.control import PruneRequest

    parse_filters(filters)
    duration = parse_duration(keep_duration, "--keep-duration") if keep_duration else 0
    request = PruneRequest(filters, all_, duration, int(keep_storage * 1e6))
    with open_controller(ctx) as controller:
        removed = anyio.run(controller.prune, request)
    if verbose or removed:  # buildctl prints the table's header with its first row only
        click.echo(_verbose(removed) if verbose else _table(removed), nl=False)
    click.echo(_summary(removed, total_only=True), nl=False)
