"""``llbkit debug dump-llb``: placeholder until the LLB loader lands."""

from __future__ import annotations

import click


@click.command("dump-llb")
@click.argument("file", default="-")
@click.option("--dot", is_flag=True, help="Print a Graphviz graph instead of JSON.")
def dump_llb(file: str, dot: bool) -> None:
    """Print each op of an LLB definition (FILE or - for standard input) as buildctl does."""
    raise click.ClickException("not implemented yet")
