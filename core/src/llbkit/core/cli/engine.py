"""The embedded engine as the ``llbkit`` command uses it, without click: opening a state root
(``--root``, ``--config``, the installed plugins), a build's request, running it with its
display, and the one line each failure ends with. The click commands use these, and so does
the command's first step (:mod:`llbkit.core.cli.entry`) for a plain ``llbkit build`` with a
frontend, which then never imports click."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llbkit.core.errors import UserError, refused_by_machine

if TYPE_CHECKING:
    import pluggy

    from llbkit.core.cli.progress_ui import Display
    from llbkit.core.control import Controller
    from llbkit.core.control.request import SolveRequest
    from llbkit.core.plugins.registry import PluginRegistry

__all__ = [
    "Plugins",
    "exit_code",
    "make_request",
    "open_engine",
    "parse_ssh",
    "reap_sync",
    "report_failure",
    "run_solve",
    "say",
    "without_httpx_cli",
]


def say(line: str) -> None:
    """One line on standard error, at once."""
    print(line, file=sys.stderr, flush=True)


def without_httpx_cli() -> None:
    """httpx imports its own command line (``httpx._main``: rich and pygments, a third of its
    import time) whenever they are installed; this process never runs it. Marked absent, httpx
    keeps a stub in its place."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def exit_code(err: BaseException) -> int | None:
    """How a command that raised ``err`` ends: its one line said, the exit code returned;
    ``None`` for a bug, which keeps its traceback."""
    if isinstance(err, UserError):
        say(f"error: {err}")
        return 1
    if isinstance(err, KeyboardInterrupt):
        say("error: canceled")
        return 130
    if isinstance(err, BrokenPipeError):
        # The reader of our output went away (e.g. `| head`); nothing left to tell it.
        sys.stderr.close()
        return 1
    if isinstance(err, OSError):
        reason = refused_by_machine(err)
        if reason is None:
            return None  # not the machine's refusal: a bug, with its traceback
        say(f"error: {reason}")
        return 1
    return None


class Plugins:
    """What the composition root builds once per process and every command uses: the
    installed plugins and the hook manager, made when a command first needs them (a command
    that only talks to a daemon never does)."""

    def __init__(self, registry: PluginRegistry | None = None) -> None:
        self._registry = registry
        self._hooks: pluggy.PluginManager | None = None

    @property
    def registry(self) -> PluginRegistry:
        if self._registry is None:
            from llbkit.core.plugins.registry import PluginRegistry

            self._registry = PluginRegistry.from_env()
        return self._registry

    @property
    def hooks(self) -> pluggy.PluginManager:
        if self._hooks is None:
            registry = self.registry
            self._hooks = registry.hook_manager()
            for warning in registry.warnings:
                say(f"warning: {warning}")
        return self._hooks


# -- the state root ------------------------------------------------------------------------


@contextmanager
def open_engine(
    root: str | None,
    config_path: str | None,
    plugins: Plugins,
    *,
    readonly: bool = False,
    reap: bool = True,
) -> Iterator[Controller]:
    """The embedded Controller over the state root ``root`` (else ``$LLBKIT_ROOT``, the
    config's, the default), released when the block ends.

    A root another process is building on is waited for, with a line saying so; a
    ``readonly`` one (for ``du``) is read beside it without waiting. ``reap=False``: the
    caller reaps (:func:`reap`) in an event loop of its own.
    """
    from llbkit.core.cache.root import default_root
    from llbkit.core.config import load_config
    from llbkit.core.control import Controller

    config = load_config(Path(config_path) if config_path else None)
    for key in config.unused:
        say(f"warning: {config.source}: {key} has no effect in this release")
    for line in config.warnings:
        say(f"warning: {line}")
    where = Path(root or os.environ.get("LLBKIT_ROOT") or config.root or default_root())
    registry, hooks = plugins.registry, plugins.hooks
    if readonly:
        controller = Controller.open_readonly(where, config, registry, hooks)
    else:
        controller = Controller.open(where, config, registry, hooks, wait=say)
    try:
        if reap and not readonly:
            reap_sync(controller)
        yield controller
    finally:
        from llbkit.core.cli.exiting import leaving

        controller.close(checkpoint=not leaving())


def reap_sync(controller: Controller) -> None:
    """:func:`reap`, in an event loop of its own."""
    import anyio

    anyio.run(reap, controller)


async def reap(controller: Controller) -> None:
    """This process owns the root now: stop what a killed owner left running, and say so."""
    if controller.store.root.recovered:
        say(
            "llbkit: cleaned up what a killed build left: "
            + ", ".join(controller.store.root.recovered)
        )
    try:
        reaped = await controller.drivers.reap_orphans()
    except UserError as err:  # e.g. runc gone since: a build that runs a process says so too
        say(f"llbkit: warning: cannot stop what a killed build left running: {err}")
        return
    if reaped:
        say(
            f"llbkit: stopped {len(reaped)} container(s) a killed build left running: "
            + ", ".join(reaped)
        )


# -- a build ---------------------------------------------------------------------------------


def make_request(
    *,
    frontend: str,
    frontend_opts: dict[str, str],
    definition: bytes | None = None,
    source: str = "",
    locals_: Sequence[str] = (),
    secrets: Sequence[str] = (),
    ssh: Sequence[str] = (),
    layouts: Sequence[str] = (),
    outputs: Sequence[str] = (),
    entitlements: Sequence[str] = (),
    export_cache: Sequence[str] = (),
    import_cache: Sequence[str] = (),
    no_cache: bool = False,
) -> SolveRequest:
    """The request ``build``'s flags make, each flag's values as given on the command line."""
    from llbkit.core.cli.buildflags import pairs, parse_cache, parse_output, parse_secret
    from llbkit.core.client.embedded import EmbeddedClient
    from llbkit.core.control import ExporterRequest
    from llbkit.core.control.request import CacheOptionsEntry, SolveRequest, new_ref

    cache_exports = [CacheOptionsEntry(*parse_cache("--export-cache", v)) for v in export_cache]
    cache_imports = [CacheOptionsEntry(*parse_cache("--import-cache", v)) for v in import_cache]
    exporters = [ExporterRequest(*parse_output(value)) for value in outputs]
    locals_map = {name: Path(path) for name, path in pairs("--local", tuple(locals_)).items()}
    for name, path in locals_map.items():
        if not path.is_dir():
            raise UserError(f"--local {name}={path}: not a directory")
    client = EmbeddedClient(
        locals=locals_map,
        secrets=dict(parse_secret(s) for s in secrets),
        ssh=dict(parse_ssh(s) for s in ssh),
        layouts={name: Path(path) for name, path in pairs("--oci-layout", tuple(layouts)).items()},
    )
    request = SolveRequest(
        ref=new_ref(),
        session=client,
        definition=definition,
        frontend=frontend,
        frontend_attrs=frontend_opts,
        exporters=exporters,
        entitlements=entitlements,
        source=source,
        cache_exports=cache_exports,
        cache_imports=cache_imports,
    )
    return request.without_cache() if no_cache else request


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


class _Shown:
    """The build's display, once made (after the root's leftovers were reported)."""

    display: Display | None = None


def run_solve(
    controller: Any, request: SolveRequest, progress: str, trace: Any, *, reap_first: bool
) -> Any:
    """Build ``request`` on ``controller``, shown with ``--progress`` and appended to the
    open ``trace`` file (if any); a failed step's lines are reported before the error is
    raised. ``reap_first``: the embedded root's leftovers are reaped in the build's own event
    loop first (a loop of its own costs a warm build 5 ms)."""
    import anyio

    from llbkit.core.cli import collector
    from llbkit.core.cli.progress_ui import make_display
    from llbkit.core.control import BuildFailed, FrontendFailed

    shown = _Shown()
    failed = True
    collector.resume()  # the engine is open: what the build makes is collected
    try:
        response = anyio.run(_solve, controller, request, progress, trace, shown, reap_first)
        failed = False
    except (BuildFailed, FrontendFailed) as err:
        report_failure(err, shown.display or make_display("quiet"))
        raise
    finally:
        if shown.display is not None:
            shown.display.close(failed=failed)
    return response


async def _solve(
    controller: Any, request: Any, progress: str, trace: Any, shown: _Shown, reap_first: bool
) -> Any:
    """The build, with its status shown (and traced) as it comes: the CLI is a client of the
    Controller like any other."""
    import anyio

    from llbkit.core.cli.progress_ui import make_display, trace_json
    from llbkit.core.errors import one_error

    if reap_first:
        await reap(controller)
    display = shown.display = make_display(progress)
    done_showing = anyio.Event()

    async def show() -> None:
        async for status in controller.status(request.ref):
            display(status)
            if trace is not None:
                trace.write(trace_json(status) + "\n")
        done_showing.set()

    with one_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(show)
            try:
                return await controller.solve(request)
            except Exception:
                # Show the failed build's last records (its error) before saying it failed.
                with anyio.move_on_after(5, shield=True):
                    await done_showing.wait()
                raise
            finally:
                # This process builds no more: its worker ends in this loop, not with it.
                with anyio.CancelScope(shield=True):
                    try:
                        await controller.stop_worker()
                    except UserError as err:
                        # What was built stands; what was left is reaped at the next start.
                        say(f"llbkit: warning: stopping the worker: {err}")


def report_failure(err: Exception, display: Any) -> None:
    """What comes before a failed build's error: for a step, its last lines (unless the live
    view showed them) and its source lines; for the frontend, its own failed steps."""
    from llbkit.core.control import BuildFailed, FrontendFailed

    display.close(failed=True)
    if isinstance(err, BuildFailed):
        if not display.shows_failed_logs:
            _print_failed_step(err.name, err.log_tail)
        if err.source:
            say(err.source)
    elif isinstance(err, FrontendFailed):
        if not display.shows_failed_logs:  # a step of the frontend's own that failed
            for name, lines in display.failed_steps():
                _print_failed_step(name, lines)
        if err.source:
            say(err.source)


def _print_failed_step(name: str, lines: Sequence[str]) -> None:
    say("------")
    say(f" > {name}:")
    for line in lines:
        say(line)
    say("------")
