"""The ``llbkit`` command's first step: ``llbkit --addr unix://… build --frontend …`` with only
``--local``, ``--opt`` and ``--progress quiet|plain`` goes to the daemon through the light client
(:mod:`llbkit.core.remote.lite`), without importing click, grpcio or asyncio: through a daemon
a warm build takes less time than those imports. Every other command line, including any flag
this parser does not know and any value it would have to judge, goes to the full CLI, which
says what is wrong with it."""

from __future__ import annotations

import os
import sys

__all__ = ["run"]

ADDRESS_ENV = "BUILDKIT_HOST"


def run() -> None:
    from llbkit.core.cachedir import cache_dir
    from llbkit.core.cli.codecache import install

    install(cache_dir())  # before the classes of the command are made
    plan = _parse(sys.argv[1:])
    if plan is None:
        from llbkit.core.cli.main import full

        full()
    from llbkit.core.cli.exiting import leave

    leave(_build(*plan))


def _parse(argv: list[str]) -> tuple[str, str, str, dict[str, str], dict[str, str]] | None:
    """(address, progress, frontend, frontend options, locals) of a build the light client
    takes, or None."""
    address = os.environ.get(ADDRESS_ENV, "")
    args = _split(argv)
    if args is None:
        return None
    i = 0
    while i < len(args) and args[i][0] == "--addr":
        address = args[i][1] or ""
        i += 1
    if i >= len(args) or args[i] != ("build", None) or not address.startswith("unix://"):
        return None
    progress, frontend = "", ""
    opts: dict[str, str] = {}
    locals_: dict[str, str] = {}
    for flag, value in args[i + 1 :]:
        if value is None or not value.isprintable() or not value.isascii():
            return None  # a positional argument, or text the full CLI must judge
        if flag == "--progress":
            progress = value
        elif flag == "--frontend":
            frontend = value
        elif flag == "--opt":
            key, sep, val = value.partition("=")
            if not key:
                return None
            opts[key] = val if sep else ""
        elif flag == "--local":
            name, sep, path = value.partition("=")
            if not name or not sep or not path or name in locals_ or not os.path.isdir(path):
                return None
            locals_[name] = path
        else:
            return None
    if progress in ("", "auto"):
        progress = os.environ.get("BUILDKIT_PROGRESS", "") or (
            "tty" if sys.stderr.isatty() else "plain"
        )
    if progress not in ("quiet", "plain") or not frontend:
        return None
    return address, progress, frontend, opts, locals_


def _split(argv: list[str]) -> list[tuple[str, str | None]] | None:
    """``--flag value`` and ``--flag=value`` as pairs; a word as (word, None)."""
    takes_value = {"--addr", "--progress", "--frontend", "--opt", "--local"}
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        flag, eq, value = word.partition("=")
        if word.startswith("--") and eq:
            if flag not in takes_value:
                return None
            out.append((flag, value))
        elif word in takes_value:
            if i + 1 >= len(argv):
                return None
            out.append((word, argv[i + 1]))
            i += 1
        elif word.startswith("-"):
            return None
        else:
            out.append((word, None))
        i += 1
    return out


def _build(
    address: str, progress: str, frontend: str, opts: dict[str, str], locals_: dict[str, str]
) -> int:
    from llbkit.core.errors import UserError
    from llbkit.core.remote.lite.build import Failed, solve

    display = None
    if progress == "plain":
        from llbkit.core.cli.progress_ui import make_display

        display = make_display("plain")
    path = address.removeprefix("unix://")
    try:
        solve(address, path, frontend=frontend, attrs=opts, locals_=locals_, show=display)
    except Failed as failed:
        _report(failed, display)
        print(f"error: {failed.error}", file=sys.stderr)
        return 1
    except UserError as err:
        if display is not None:
            display.close(failed=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: canceled", file=sys.stderr)
        return 130
    if display is not None:
        display.close()
    return 0


def _report(failed: object, display: object) -> None:
    """What the full CLI prints before a failed build's error: the failed step's log (unless
    the display showed it) and the Dockerfile lines."""
    from llbkit.core.cli.build import report_failure
    from llbkit.core.cli.progress_ui import make_display
    from llbkit.core.remote.lite.build import Failed
    from llbkit.core.remote.lite.messages import status

    assert isinstance(failed, Failed)
    if display is None:
        display = make_display("quiet")
        for message in failed.raw:
            display(status(message))
    report_failure(failed.error, display)
