"""Leaving the process once a command is done, without the interpreter's teardown."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["leave", "leaving", "will_leave"]

#: holds True once :func:`will_leave` was said
_leaving: list[bool] = []


def will_leave() -> None:
    """Say that this process ends with :func:`leave` once its command is done (the
    ``llbkit`` command; not a caller of :func:`~llbkit.core.cli.main.main` in its own
    process), so what it opens may be left to the exit."""
    _leaving.append(True)


def leaving() -> bool:
    """Whether :func:`will_leave` was said."""
    return bool(_leaving)


def leave(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, minus the interpreter's teardown."""
    import atexit
    import os
    import threading

    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    _flush_leaked_writers()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:  # what sys.exit does with a message
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone, or a stream already closed
            status = status or 120  # as the interpreter reports a failed flush at exit
    os._exit(status)


def _flush_leaked_writers() -> None:
    """A file written and never closed is flushed when the interpreter frees it; nothing
    frees it now, so do what freeing would have done (about 2 ms: an exact type test per
    object, subclasses included, is five times cheaper than ``isinstance``, and made by
    ``map``/``compress`` without a Python loop, twice as cheap again)."""
    import gc
    import io
    import itertools

    writers: set[type] = set()
    pending: list[type] = [io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper]
    while pending:
        kind = pending.pop()
        writers.add(kind)
        pending += kind.__subclasses__()
    objects = gc.get_objects()
    for obj in itertools.compress(objects, map(writers.__contains__, map(type, objects))):
        try:
            if not obj.closed and obj.writable():
                obj.flush()
        except (OSError, ValueError):
            pass
