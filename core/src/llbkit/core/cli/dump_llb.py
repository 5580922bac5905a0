"""``llbkit debug dump-llb``: what a definition holds, printed as buildctl prints it."""

from __future__ import annotations

import sys

import click

from llbkit.core.errors import UserError


def read_input(path: str) -> tuple[bytes, str]:
    """Read ``path`` (``-`` for standard input); a file that cannot be read is a one-line error."""
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        with open(path, "rb") as handle:
            return handle.read(), path
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None


@click.command("dump-llb")
@click.argument("file", default="-")
@click.option("--dot", is_flag=True, help="Print a Graphviz graph instead of JSON.")
def dump_llb(file: str, dot: bool) -> None:
    """Print each op of an LLB definition (FILE, or - for standard input) as buildctl does."""
    from llbkit.core.llb import load_definition
    from llbkit.core.llb.dot import dot_lines
    from llbkit.core.llb.dump import dump_lines

    data, source = read_input(file)
    definition = load_definition(data, source=source)
    lines = dot_lines(definition) if dot else dump_lines(definition)
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
