"""The ``llbkit`` command's first step: ``llbkit --addr unix://… build --frontend …`` with
``--local``, ``--opt``, outputs and caches the daemon keeps, and any ``--progress``, goes to the
daemon through the light client (:mod:`llbkit.core.remote.lite`), without importing click,
grpcio or asyncio: through a daemon a warm build takes less time than those imports. Every
other command line, including any flag this parser does not know and any value it would have
to judge, goes to the full CLI, which says what is wrong with it."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's import is a tenth of this command's start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["run"]

ADDRESS_ENV = "BUILDKIT_HOST"


def run() -> None:
    from llbkit.core.cli.heap import restart_on_huge_pages

    restart_on_huge_pages(sys.argv[1:], ADDRESS_ENV)  # before the heap has grown
    from llbkit.core.cachedir import cache_folder
    from llbkit.core.cli import collector, deferred, modulecache

    modulecache.install(cache_folder())  # before the modules it holds are imported
    deferred.install()  # ahead of it: a deferred module's code is the one it keeps
    collector.pause()  # until the build runs (a command the full CLI takes: until it starts)
    _interrupt_on_terminate()
    plan = _parse(sys.argv[1:])
    if plan is None:
        from llbkit.core.cli.main import run as full

        collector.resume()
        full()
    from llbkit.core.cli.exiting import leave, will_leave

    will_leave()
    leave(_build(plan) if plan.address else _build_embedded(plan))


def _interrupt_on_terminate() -> None:
    """SIGTERM (``kill``, ``timeout``, a CI runner's stop) ends a build as Ctrl-C does: the
    build canceled, its temporary files removed, the embedded engine's containers stopped,
    ``error: canceled``. Whoever handles SIGINT then (asyncio's runner, or Python's default)
    is handed the signal; a process started with SIGINT ignored (``cmd &`` in a script) is
    interrupted all the same."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, interrupt)


class _Plan:
    """A build the light client takes: what the full CLI would have asked the daemon."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.progress = "auto"
        self.frontend = ""
        self.opts: dict[str, str] = {}
        self.locals: dict[str, str] = {}
        self.exporters: list[tuple[str, dict[str, str]]] = []
        self.cache_exports: list[tuple[str, dict[str, str]]] = []
        self.cache_imports: list[tuple[str, dict[str, str]]] = []
        self.entitlements: list[str] = []
        self.no_cache = False
        self.metadata_file = ""
        self.trace = ""
        self.secrets: dict[str, bytes] = {}
        #: where each exporter's output lands here (dest, a directory?); None: with the daemon
        self.outputs: list[tuple[str, bool] | None] = []
        #: no daemon: the embedded engine's state root and config (empty: the defaults)
        self.root = ""
        self.config = ""
        #: each flag's values as given (the embedded engine reads them as the full CLI does)
        self.given: dict[str, list[str]] = {}


#: flags with a value, and flags without
_VALUED = {
    "--addr",
    "--progress",
    "--frontend",
    "--opt",
    "--local",
    "--output",
    "-o",
    "--export-cache",
    "--import-cache",
    "--allow",
    "--metadata-file",
    "--secret",
    "--trace",
    "--root",
    "--config",
}
_SWITCHES = {"--no-cache"}
#: outputs that land on this machine: the full client's session serves them
_CLIENT_OUTPUTS = ("local", "tar", "oci", "docker")


def _parse(argv: list[str]) -> _Plan | None:
    """The build the light client takes, or None (then the full CLI reads the line)."""
    args = _split(argv)
    if args is None:
        return None
    address = os.environ.get(ADDRESS_ENV, "")
    engine: dict[str, str] = {}  # --root and --config, for the embedded engine
    i = 0
    while i < len(args) and args[i][0] in ("--addr", "--root", "--config"):
        flag, value = args[i]
        if flag == "--addr":
            address = value or ""
        elif not value or os.path.isfile(value) != (flag == "--config"):
            return None  # a file as the root, or no file as the config: the full CLI says so
        else:
            engine[flag] = value
        i += 1
    if i >= len(args) or args[i] != ("build", None):
        return None
    if address and (engine or not _plain_unix(address)):
        return None
    plan = _Plan(address)
    plan.root, plan.config = engine.get("--root", ""), engine.get("--config", "")
    try:
        for flag, value in args[i + 1 :]:
            if not _take(plan, flag, value):
                return None
            plan.given.setdefault("--output" if flag == "-o" else flag, []).append(value or "")
    except Exception:  # a value the full CLI refuses: it says so, in its words
        return None
    if plan.progress == "auto":
        plan.progress = os.environ.get("BUILDKIT_PROGRESS", "") or (
            "tty" if sys.stderr.isatty() else "plain"
        )
    if plan.progress not in ("quiet", "plain", "tty", "rawjson") or not plan.frontend:
        return None
    return plan


def _take(plan: _Plan, flag: str, value: str | None) -> bool:
    """Whether one flag is understood (and taken into ``plan``)."""
    from llbkit.core.cli import buildflags

    if flag in _SWITCHES:
        plan.no_cache = True
        return value == ""
    if value is None or not value.isprintable() or not value.isascii():
        return False  # a positional argument, or text the full CLI must judge
    if flag == "--progress":
        plan.progress = value
    elif flag == "--frontend":
        plan.frontend = value
    elif flag == "--opt":
        key, sep, val = value.partition("=")
        if not key:
            return False
        plan.opts[key] = val if sep else ""
    elif flag == "--local":
        name, sep, path = value.partition("=")
        if not name or not sep or not path or name in plan.locals or not os.path.isdir(path):
            return False
        plan.locals[name] = path
    elif flag in ("--output", "-o"):
        kind, attrs = buildflags.parse_output(value)
        output = None
        if kind in _CLIENT_OUTPUTS:
            directory = kind == "local" or not buildflags.is_archive(attrs)
            dest = attrs.pop("dest", "")
            if not dest:  # a directory must be named: the full client says so
                return False
            output = (dest, directory)
        plan.exporters.append((kind, attrs))
        plan.outputs.append(output)
    elif flag == "--secret":
        name, data = buildflags.parse_secret(value)
        plan.secrets[name] = data
    elif flag in ("--export-cache", "--import-cache"):
        if "type=" not in value:  # the deprecated form: the full CLI warns about it
            return False
        kind, attrs = buildflags.parse_cache(flag, value)
        if kind == "local":  # a store on this machine, served through the session
            return False
        taken = plan.cache_exports if flag == "--export-cache" else plan.cache_imports
        taken.append((kind, attrs))
    elif flag == "--allow":
        from llbkit.core.entitlements import ENTITLEMENTS

        if value not in ENTITLEMENTS:
            return False
        plan.entitlements.append(value)
    elif flag == "--metadata-file":
        if not value or os.path.isdir(value):
            return False
        plan.metadata_file = value
    elif flag == "--trace":
        if not value or os.path.isdir(value):
            return False
        plan.trace = value
    else:
        return False
    return True


def _plain_unix(address: str) -> bool:
    """A ``unix://`` address the light client reads exactly as the full one does."""
    path = address.removeprefix("unix://")
    return path != address and path.startswith("/") and not any(c in path for c in "?#%")


def _split(argv: list[str]) -> list[tuple[str, str | None]] | None:
    """``--flag value`` and ``--flag=value`` as pairs (a switch's value ""); a word as
    (word, None)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        flag, eq, value = word.partition("=")
        if word.startswith("--") and eq:
            if flag not in _VALUED:
                return None
            out.append((flag, value))
        elif word in _VALUED:
            if i + 1 >= len(argv):
                return None
            out.append((word, argv[i + 1]))
            i += 1
        elif word in _SWITCHES:
            out.append((word, ""))
        elif word.startswith("-"):
            return None
        else:
            out.append((word, None))
        i += 1
    return out


def _build(plan: _Plan) -> int:
    from llbkit.core.errors import BuildFailed, FrontendFailed, UserError
    from llbkit.core.remote.lite.build import solve

    try:
        records = _Records(plan.progress, plan.trace)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    opts = {"no-cache": "", **plan.opts} if plan.no_cache else plan.opts
    from llbkit.core.cli import collector

    collector.resume()
    try:
        response = solve(
            plan.address,
            plan.address.removeprefix("unix://"),
            frontend=plan.frontend,
            attrs=opts,
            locals_=plan.locals,
            exporters=plan.exporters,
            cache_exports=plan.cache_exports,
            cache_imports=plan.cache_imports,
            entitlements=plan.entitlements,
            secrets=plan.secrets,
            outputs=plan.outputs,
            on_status=records.add if records.wanted else None,
        )
    except (BuildFailed, FrontendFailed) as err:
        from llbkit.core.cli.engine import report_failure

        report_failure(err, records.display())
        print(f"error: {err}", file=sys.stderr)
        return 1
    except UserError as err:
        records.close(failed=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from llbkit.core.remote.lite.session import discard_partial

        discard_partial()  # this process leaves before the threads writing them finish
        records.close(failed=True)  # a live view gives the terminal back first
        print("error: canceled", file=sys.stderr)
        return 130
    records.close()
    if plan.metadata_file:
        from llbkit.core.cli.buildflags import write_metadata

        try:
            write_metadata(plan.metadata_file, response)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


def _build_embedded(plan: _Plan) -> int:
    """The build on the engine embedded in this process, as the full CLI's ``build`` runs it
    (its functions, :mod:`llbkit.core.cli.engine`), without click."""
    from llbkit.core.cachedir import cache_dir
    from llbkit.core.cli.codecache import install

    install(cache_dir())  # before the classes of the engine are made
    from llbkit.core.cli.buildflags import write_metadata
    from llbkit.core.cli.engine import (
        Plugins,
        exit_code,
        make_request,
        open_engine,
        run_solve,
        without_httpx_cli,
    )
    from llbkit.core.cli.progress_ui import open_trace
    from llbkit.core.errors import UserError

    without_httpx_cli()
    given = plan.given
    try:
        request = make_request(
            frontend=plan.frontend,
            frontend_opts=plan.opts,
            locals_=given.get("--local", ()),
            secrets=given.get("--secret", ()),
            outputs=given.get("--output", ()),
            entitlements=plan.entitlements,
            export_cache=given.get("--export-cache", ()),
            import_cache=given.get("--import-cache", ()),
            no_cache=plan.no_cache,
        )
        trace = open_trace(plan.trace) if plan.trace else None
        try:
            with open_engine(plan.root, plan.config, Plugins(), reap=False) as controller:
                response = run_solve(controller, request, plan.progress, trace, reap_first=True)
        finally:
            if trace is not None:
                trace.close()
        if plan.metadata_file:
            write_metadata(plan.metadata_file, dict(response.exporter_response))
    except (UserError, KeyboardInterrupt, OSError) as err:
        code = exit_code(err)
        if code is None:
            raise
        return code
    return 0


class _Records:
    """The build's status records, shown as they come and appended to ``--trace``. With quiet
    progress and no trace none is asked for (a quiet display shows nothing, and a failure's
    report comes from the error itself); the quiet display is then made only for a failure's
    report."""

    def __init__(self, progress: str, trace: str = "") -> None:
        self._shown: Any = None
        self._trace: Any = None
        if trace:
            from llbkit.core.cli.progress_ui import open_trace, trace_json

            self._trace = open_trace(trace)
            self._trace_json = trace_json
        if progress != "quiet":
            self._open(progress)
        elif self._trace is not None:
            self._open("quiet")
        #: whether the build's records are asked for at all
        self.wanted = self._shown is not None

    def _open(self, mode: str) -> Any:
        from llbkit.core.cli.progress_ui import make_display
        from llbkit.core.remote.lite.messages import status

        self._shown = make_display(mode)
        self._decode = status
        return self._shown

    def add(self, message: bytes) -> None:
        decoded = self._decode(message)
        self._shown(decoded)
        if self._trace is not None:
            self._trace.write(self._trace_json(decoded) + "\n")

    def display(self) -> Any:
        """The display, made now for quiet progress."""
        return self._shown if self._shown is not None else self._open("quiet")

    def close(self, *, failed: bool = False) -> None:
        if self._shown is not None:
            self._shown.close(failed=failed)
        if self._trace is not None:
            self._trace.close()
