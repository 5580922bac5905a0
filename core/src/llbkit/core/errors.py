"""Errors llbkit raises, and which of them are the user's to fix.

::

    LlbkitError                      anything llbkit raises on purpose
    ├── UserError                    bad input: printed as one line, exit 1, no traceback
    │   ├── SourceError              bad input at a place of the build's source (a Dockerfile line)
    │   ├── DefinitionError          an LLB definition that cannot be loaded or is not a sane graph
    │   ├── ConfigError              a config file, flag or option value that is wrong
    │   │   └── UnknownOptionError   an option key a driver does not know (lists the valid ones)
    │   └── PluginError              a plugin that cannot be used as asked
    │       ├── UnknownPluginError   no plugin of that name (lists installed, says what to install)
    │       ├── PluginConflictError  two distributions register one name
    │       ├── PluginLoadError      the plugin's module failed to import or is not a driver
    │       └── PluginVersionError   the plugin targets another contract version
    └── (everything else is a bug in llbkit or a plugin, and keeps its traceback, except an
         OSError the machine raised (a full disk, a quota, a read-only or forbidden path):
         refused_by_machine() words it in one line)

A message names the thing, where it came from and, when there is one, the fix.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

__all__ = [
    "BuildFailed",
    "source_block",
    "ConfigError",
    "DefinitionError",
    "FrontendFailed",
    "LlbkitError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PluginVersionError",
    "SourceError",
    "UnknownOptionError",
    "no_ssh_agent",
    "UnknownPluginError",
    "UserError",
    "check_options",
    "first_error",
    "install_command",
    "one_error",
    "refused_by_machine",
]


class LlbkitError(Exception):
    """Base of every error llbkit raises on purpose."""


class UserError(LlbkitError):
    """Input the user can fix; the CLI prints ``error: <message>`` and exits 1."""


class SourceError(UserError):
    """Bad input at a known place of the build's source; the CLI shows ``source`` (the lines
    around it, as BuildKit prints them) above the one-line message."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source


def source_block(text: str, filename: str, first: int, last: int) -> str:
    """The block a :class:`SourceError` shows: lines ``first``..``last`` of ``text`` marked
    ``>>>`` under ``filename:first``, with context lines as BuildKit adds them (one before
    and one after in turn, four in all for one line, two for more; fewer at the file's ends).
    """
    lines = text.split("\n")
    start, end = first, min(last, len(lines))
    pad = 4 if start == end else 2
    added = 0
    while added < pad:
        # As BuildKit counts: each turn counts one more, so a line's context is 2+2, not 4+0.
        if start > 1:
            start -= 1
            added += 1
        if end != len(lines):
            end += 1
            added += 1
        added += 1
    shown = []
    for n in range(start, end + 1):
        mark = ">>>" if first <= n <= last else "   "
        shown.append(f" {n:>3} | {mark} {lines[n - 1]}")
    rule = "-" * 20
    return "\n".join([f"{filename}:{first}", rule, *shown, rule])


class BuildFailed(UserError):
    """A vertex failed: names it, says why, and carries the tail of its log."""

    def __init__(
        self, name: str, reason: str, log_tail: Sequence[str] = (), source: str = ""
    ) -> None:
        self.name = name
        self.reason = reason
        self.log_tail = list(log_tail)
        #: where the step came from (a frontend's ``llbkit.source`` description), if known
        self.source = source
        # A process's own failure reads exactly as BuildKit's; others name the step.
        shown = reason if reason.startswith('process "') else f"{name}: {reason}"
        super().__init__(f"failed to solve: {shown}")


class FrontendFailed(SourceError):
    """The frontend refused the build (a Dockerfile error...); ``source`` shows where."""


class DefinitionError(UserError):
    """An LLB definition that cannot be parsed or does not form a valid graph."""


class ConfigError(UserError):
    """A configuration value, flag or option that is not acceptable."""


class UnknownOptionError(ConfigError):
    """A key that a driver does not accept; the message lists the keys it does."""

    def __init__(self, what: str, key: str, valid: Iterable[str]) -> None:
        self.what = what
        self.key = key
        self.valid = sorted(valid)
        listed = ", ".join(self.valid) if self.valid else "none"
        super().__init__(f"{what}: unknown option {key!r}; valid options: {listed}")


def check_options(what: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse the first of ``given`` keys that is not ``valid`` (:class:`UnknownOptionError`):
    every driver's check of its attributes, in one place."""
    known = set(valid)
    for key in given:
        if key not in known:
            raise UnknownOptionError(what, key, known)


class PluginError(UserError):
    """A plugin that cannot be used as asked."""


class UnknownPluginError(PluginError):
    """No installed plugin answers to the name; says which are installed and what to install."""

    def __init__(
        self, kind: str, name: str, installed: Iterable[str], distribution: str | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.installed = sorted(installed)
        self.distribution = distribution
        listed = ", ".join(self.installed) if self.installed else "none"
        message = f"unknown {kind} {name!r}; installed: {listed}"
        if distribution:
            message += f"; install it with: {install_command(distribution)}"
        super().__init__(message)


def install_command(distribution: str) -> str:
    """The one-line command that installs ``distribution`` into the environment running llbkit,
    as it can be typed there: a uv-made venv has no ``pip`` unless one was added to it."""
    import importlib.util
    import shlex
    import sys
    from pathlib import Path

    if importlib.util.find_spec("pip") is not None:
        return f"pip install {distribution}"
    try:
        cfg = (Path(sys.prefix) / "pyvenv.cfg").read_text()
    except OSError:  # not a venv: pip is the usual way in, once installed
        cfg = ""
    if any(line.split("=")[0].strip() == "uv" for line in cfg.splitlines()):
        # A checkout of llbkit keeps its uv beside the venv (scripts/setup.sh).
        beside = Path(sys.prefix).parent / ".tools" / "bin" / "uv"
        uv = shlex.quote(str(beside)) if beside.is_file() else "uv"
        return f"{uv} pip install --python {shlex.quote(sys.executable)} {distribution}"
    return f"pip install {distribution}"


class PluginConflictError(PluginError):
    """Two distributions register the same name in one group."""


class PluginLoadError(PluginError):
    """The plugin's entry point failed to import, or does not provide what its group needs."""


class PluginVersionError(PluginError):
    """The plugin was written for a contract version that core does not provide."""


@contextmanager
def one_error() -> Iterator[None]:
    """Let the first real failure out of a task group, instead of the group around it."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def first_error(err: BaseException) -> BaseException:
    """The first real failure inside (nested) exception groups, skipping the cancellations
    that a failing task causes in its siblings."""
    import anyio

    while isinstance(err, BaseExceptionGroup):
        inner = [e for e in err.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        err = (inner or list(err.exceptions))[0]
    return err


# What the machine, not llbkit, refuses: the user frees space or fixes the path.
_MACHINE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.EIO,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    }
)


def refused_by_machine(err: BaseException) -> str | None:
    """``path: reason`` when ``err`` (or the first failure inside a group) is an OSError the
    machine raised, such as a disk filling up mid-export; ``None`` for anything else."""
    err = first_error(err)
    if not isinstance(err, OSError) or err.errno not in _MACHINE_ERRNOS:
        return None
    reason = (err.strerror or str(err)).lower()
    return f"{err.filename}: {reason}" if err.filename else reason


def no_ssh_agent(id: str, *, forwarded: bool) -> str:
    """BuildKit's words for an SSH agent the client did not forward: the step's id as written
    (``""`` for the default) when the client forwards none, the id it stands for when others."""
    hint = f"use --ssh {id or 'default'}"
    if not forwarded:
        return f'no SSH key "{id}" forwarded from the client ({hint})'
    return f"unset ssh forward key {id or 'default'} ({hint})"
