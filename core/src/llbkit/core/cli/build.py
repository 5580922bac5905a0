"""``llbkit build``: buildctl's ``build``, run by an engine embedded in this process."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click

from llbkit.core.cli.buildflags import (
    pairs,
    parse_cache,
    parse_output,
    parse_secret,
    write_metadata,
)
from llbkit.core.cli.progress_ui import make_display, open_trace
from llbkit.core.cli.state import open_controller
from llbkit.core.entitlements import ENTITLEMENTS
from llbkit.core.errors import UserError

__all__ = ["build"]


def _client(
    locals_: tuple[str, ...],
    secret: tuple[str, ...],
    ssh: tuple[str, ...],
    oci_layout: tuple[str, ...],
) -> Any:
    """The embedded client: ``--local`` directories, ``--secret`` values, ``--ssh`` agents,
    ``--oci-layout`` stores."""
    from llbkit.core.client.embedded import EmbeddedClient

    locals_map = {name: Path(path) for name, path in pairs("--local", locals_).items()}
    for name, path in locals_map.items():
        if not path.is_dir():
            raise UserError(f"--local {name}={path}: not a directory")
    return EmbeddedClient(
        locals=locals_map,
        secrets=dict(parse_secret(s) for s in secret),
        ssh=dict(parse_ssh(s) for s in ssh),
        layouts={name: Path(path) for name, path in pairs("--oci-layout", oci_layout).items()},
    )


def parse_ssh(value: str) -> tuple[str, Path]:
    """``default`` (``$SSH_AUTH_SOCK``), ``id`` or ``id=/path/to/agent.sock``."""
    import stat

    sid, _, given = value.partition("=")
    if "," in given:
        raise UserError(f"--ssh {value!r}: key files are not supported; forward an agent socket")
    path = given or os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise UserError(f"--ssh {value!r}: SSH_AUTH_SOCK is not set; give id=<agent socket>")
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError as err:
        raise UserError(f"--ssh {value!r}: {path}: {err.strerror}") from None
    if not is_socket:
        raise UserError(f"--ssh {value!r}: {path} is not an agent socket")
    return sid or "default", Path(path)


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


def _print_log_tail(err: Any, *, log: bool = True) -> None:
    """As buildctl does: the failed step's last lines (if any; not ``log`` when the live
    view showed them), then its source lines, before the error itself."""
    if log:
        _print_failed_step(err.name, err.log_tail)
    if err.source:
        click.echo(err.source, err=True)


def report_failure(err: Exception, display: Any) -> None:
    """What comes before a failed build's error: for a step, its last lines (unless the live
    view showed them) and its source lines; for the frontend, its own failed steps."""
    from llbkit.core.control import BuildFailed, FrontendFailed

    display.close(failed=True)
    if isinstance(err, BuildFailed):
        _print_log_tail(err, log=not display.shows_failed_logs)
    elif isinstance(err, FrontendFailed):
        if not display.shows_failed_logs:  # a step of the frontend's own that failed
            for name, lines in display.failed_steps():
                _print_failed_step(name, lines)
        if err.source:
            click.echo(err.source, err=True)


def _print_failed_step(name: str, lines: Sequence[str]) -> None:
    click.echo("------", err=True)
    click.echo(f" > {name}:", err=True)
    for line in lines:
        click.echo(line, err=True)
    click.echo("------", err=True)


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
    from llbkit.core.control import BuildFailed, ExporterRequest, FrontendFailed
    from llbkit.core.control.request import CacheOptionsEntry, SolveRequest, new_ref

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
    cache_exports = [CacheOptionsEntry(*parse_cache("--export-cache", v)) for v in export_cache]
    cache_imports = [CacheOptionsEntry(*parse_cache("--import-cache", v)) for v in import_cache]
    exporters = [ExporterRequest(*parse_output(value)) for value in outputs]
    data, source = (None, "") if frontend else _read_definition(definition)
    trace_file = open_trace(trace) if trace else None
    with open_controller(ctx, config_path) as controller:
        request = SolveRequest(
            ref=new_ref(),
            session=_client(locals_, secret, ssh, oci_layout),
            definition=data,
            frontend=frontend,
            frontend_attrs=frontend_opts,
            exporters=exporters,
            entitlements=allow,
            source=source,
            cache_exports=cache_exports,
            cache_imports=cache_imports,
        )
        if no_cache:
            request = request.without_cache()
        display = make_display(progress)
        failed = True
        try:
            response = anyio.run(_solve, controller, request, display, trace_file)
            failed = False
        except (BuildFailed, FrontendFailed) as err:
            report_failure(err, display)
            raise
        finally:
            display.close(failed=failed)
            if trace_file is not None:
                trace_file.close()
    if metadata_file:
        write_metadata(metadata_file, dict(response.exporter_response))


async def _solve(controller: Any, request: Any, display: Any, trace: Any) -> Any:
    """The build, with its status shown (and traced) as it comes: the CLI is a client of the
    Controller like any other."""
    from llbkit.core.cli.progress_ui import trace_json

    shown = anyio.Event()

    async def show() -> None:
        async for status in controller.status(request.ref):
            display(status)
            if trace is not None:
                trace.write(trace_json(status) + "\n")
        shown.set()

    from llbkit.core.errors import one_error

    with one_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(show)
            try:
                return await controller.solve(request)
            except Exception:
                # Show the failed build's last records (its error) before saying it failed.
                with anyio.move_on_after(5, shield=True):
                    await shown.wait()
                raise
            finally:
                # This process builds no more: its worker ends in this loop, not with it.
                with anyio.CancelScope(shield=True):
                    try:
                        await controller.stop_worker()
                    except UserError as err:
                        # What was built stands; what was left is reaped at the next start.
                        click.echo(f"llbkit: warning: stopping the worker: {err}", err=True)


def _undecodable(text: str) -> bool:
    """Whether ``text`` (from the command line) holds bytes that are not UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
