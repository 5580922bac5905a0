"""``llbkit build``: buildctl's ``build``, run by an engine embedded in this process."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llbkit.core.cli.buildflags import (
    write_metadata,
)
from llbkit.core.cli.progress_ui import open_trace
from llbkit.core.cli.state import open_controller
from llbkit.core.entitlements import ENTITLEMENTS
from llbkit.core.errors import UserError

__all__ = ["build"]


def _read_definition(definition: str) -> tuple[bytes, str]:
    """The LLB bytes from ``-`` (standard input, refused on a terminal) or a file."""
    if definition == "-":
        if sys.stdin.isatty():
            raise UserError("no LLB on standard input; pipe a definition in (e.g. from the SDK)")
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return Path(definition).read_bytes(), definition
    except OSError as err:
        raise UserError(f"cannot read {definition}: {err.strerror}") from None


_OUTPUT_HELP = (
    "Where the result goes; repeatable. type=local,dest=DIR: the files in a directory. "
    "type=tar,dest=FILE|-: the files as a tarball. type=oci,dest=FILE|-: an OCI image "
    "layout tarball (tar=false: a directory). type=docker,dest=FILE|-: a tarball for "
    "docker load (name=REF tags it); without dest, archives go to standard output. "
    "type=image,name=REF,push=true: the image pushed to a "
    "registry. Image types take compression=gzip|zstd|uncompressed, oci-mediatypes, "
    "annotation.KEY=VALUE and more; installed plugins add types (llbkit debug plugins)."
)


@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output", "-o", "outputs", multiple=True, help=_OUTPUT_HELP)
@click.option(
    "--progress",
    default="auto",
    type=click.Choice(["auto", "tty", "plain", "rawjson", "quiet"]),
    help="How to show progress (auto: tty on a terminal, else plain).",
)
@click.option("--no-cache", is_flag=True, help="Run every step, ignoring cached results.")
@click.option(
    "--metadata-file",
    type=click.Path(dir_okay=False),
    help="Write the build's result metadata as JSON to this file.",
)
@click.option(
    "--local",
    "locals_",
    multiple=True,
    metavar="NAME=PATH",
    help="A directory the build reads as local://NAME.",
)
@click.option(
    "--oci-layout",
    multiple=True,
    metavar="NAME=PATH",
    help="An OCI layout the build reads as oci-layout://NAME.",
)
@click.option("--frontend", default="", help="A frontend to run instead of reading LLB.")
@click.option("--opt", multiple=True, metavar="KEY=VALUE", help="An option for the frontend.")
@click.option(
    "--secret",
    multiple=True,
    metavar="id=ID,src=PATH|env=VAR",
    help="A secret the build may mount.",
)
@click.option(
    "--ssh",
    multiple=True,
    metavar="default|ID[=SOCKET]",
    help="An SSH agent socket the build may use (default: $SSH_AUTH_SOCK).",
)
@click.option(
    "--allow",
    multiple=True,
    type=click.Choice(ENTITLEMENTS),
    help="Grant an entitlement.",
)
@click.option(
    "--export-cache",
    multiple=True,
    metavar="type=…",
    help="Export the build cache; repeatable. type=registry,ref=REF | type=local,dest=DIR "
    "| type=inline (in the exported image), with mode=min|max, compression=…, "
    "oci-mediatypes, image-manifest, ignore-error.",
)
@click.option(
    "--import-cache",
    multiple=True,
    metavar="type=…",
    help="Import a build cache, asked in the order given. type=registry,ref=REF "
    "(a cache or an image with inline cache) | type=local,src=DIR[,tag=T|digest=D].",
)
@click.option(
    "--trace",
    type=click.Path(dir_okay=False),
    help="Append every progress record to this file, as buildctl writes it.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The engine's configuration (buildkitd.toml).",
)
@click.argument("definition", required=False, default="-")
@click.pass_context
def build(
    ctx: click.Context,
    outputs: tuple[str, ...],
    progress: str,
    no_cache: bool,
    metadata_file: str | None,
    locals_: tuple[str, ...],
    oci_layout: tuple[str, ...],
    frontend: str,
    opt: tuple[str, ...],
    secret: tuple[str, ...],
    ssh: tuple[str, ...],
    allow: tuple[str, ...],
    export_cache: tuple[str, ...],
    import_cache: tuple[str, ...],
    trace: str | None,
    config_path: str | None,
    definition: str,
) -> None:
    """Build an LLB definition read from standard input (or a file), as buildctl build does."""
    from llbkit.core.cli.engine import make_request, run_solve
    from llbkit.core.cli.state import endpoint

    if opt and not frontend:
        raise UserError("--opt is for a frontend; give --frontend (e.g. dockerfile.v0)")
    frontend_opts = {}
    for value in opt:
        key, sep, val = value.partition("=")
        if not key:
            raise UserError(f"--opt {value!r}: expected key=value")
        if not value.isascii() and _undecodable(value):
            readable = value.encode(errors="surrogateescape").decode(errors="replace")
            raise UserError(f"--opt {readable!r}: not UTF-8 (a frontend's options are text)")
        frontend_opts[key] = val if sep else ""
    data, source = (None, "") if frontend else _read_definition(definition)
    request = make_request(
        frontend=frontend,
        frontend_opts=frontend_opts,
        definition=data,
        source=source,
        locals_=locals_,
        secrets=secret,
        ssh=ssh,
        layouts=oci_layout,
        outputs=outputs,
        entitlements=allow,
        export_cache=export_cache,
        import_cache=import_cache,
        no_cache=no_cache,
    )
    trace_file = open_trace(trace) if trace else None
    try:
        with open_controller(ctx, config_path, reap=False) as controller:
            embedded = endpoint(ctx) is None
            response = run_solve(controller, request, progress, trace_file, reap_first=embedded)
    finally:
        if trace_file is not None:
            trace_file.close()
    if metadata_file:
        write_metadata(metadata_file, dict(response.exporter_response))


def _undecodable(text: str) -> bool:
    """Whether ``text`` (from the command line) holds bytes that are not UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
