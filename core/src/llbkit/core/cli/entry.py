"""The ``llbkit`` command's first step: ``llbkit --addr unix://… build --frontend …`` with only
``--local``, ``--opt`` and ``--progress quiet|plain`` goes to the daemon through the light client
(:mod:`llbkit.core.remote.lite`), without importing click, grpcio or asyncio: through a daemon
a warm build takes less time than those imports. Every other command line, including any flag
this parser does not know and any value it would have to judge, goes to the full CLI, which
says what is wrong with it."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

__all__ = ["run"]

ADDRESS_ENV = "BUILDKIT_HOST"


def run() -> None:
    plan = _parse(sys.argv[1:])
    if plan is None:
        from llbkit.core.cachedir import cache_dir
        from llbkit.core.cli.codecache import install
        from llbkit.core.cli.main import full

        install(cache_dir())  # before the classes of the command are made
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
    if i >= len(args) or args[i] != ("build", None) or not _plain_unix(address):
        return None
    progress, frontend = "auto", ""
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
    if progress == "auto":
        progress = os.environ.get("BUILDKIT_PROGRESS", "") or (
            "tty" if sys.stderr.isatty() else "plain"
        )
    if progress not in ("quiet", "plain") or not frontend:
        return None
    return address, progress, frontend, opts, locals_


def _plain_unix(address: str) -> bool:
    """A ``unix://`` address the light client reads exactly as the full one does."""
    path = address.removeprefix("unix://")
    return path != address and path.startswith("/") and not any(c in path for c in "?#%")


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
    from llbkit.core.errors import BuildFailed, FrontendFailed, UserError
    from llbkit.core.remote.lite.build import solve

    records = _Records(progress)
    try:
        solve(
            address,
            address.removeprefix("unix://"),
            frontend=frontend,
            attrs=opts,
            locals_=locals_,
            on_status=records.add,
        )
    except (BuildFailed, FrontendFailed) as err:
        from llbkit.core.cli.build import report_failure

        report_failure(err, records.display())
        print(f"error: {err}", file=sys.stderr)
        return 1
    except UserError as err:
        records.close(failed=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: canceled", file=sys.stderr)
        return 130
    records.close()
    return 0


class _Records:
    """The build's status records: shown as they come (plain), or (quiet) kept undecoded, so
    that a build that succeeds never pays for decoding them, until they pass a size; then,
    and for a failure's report, they go to the quiet display, which keeps what it needs."""

    KEEP = 4 << 20

    def __init__(self, progress: str) -> None:
        self._shown: Any = None
        self._raw: list[bytes] | None = None
        self._size = 0
        if progress == "plain":
            self._open("plain")
        else:
            self._raw = []

    def _open(self, mode: str) -> Any:
        from llbkit.core.cli.progress_ui import make_display
        from llbkit.core.remote.lite.messages import status

        self._shown = make_display(mode)
        self._decode = status
        return self._shown

    def add(self, message: bytes) -> None:
        if self._raw is not None:
            self._raw.append(message)
            self._size += len(message)
            if self._size <= self.KEEP:
                return
            self.display()
        else:
            self._shown(self._decode(message))

    def display(self) -> Any:
        """The display, with every record kept so far given to it."""
        if self._raw is not None:
            kept, self._raw = self._raw, None
            self._open("quiet")
            for message in kept:
                with contextlib.suppress(Exception):  # an unreadable record is skipped
                    self._shown(self._decode(message))
        return self._shown

    def close(self, *, failed: bool = False) -> None:
        if self._shown is not None:
            self._shown.close(failed=failed)
