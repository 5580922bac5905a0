"""What the daemon is doing, on ``SIGUSR1``: every thread's stack and every task's await
chain, written to its standard error (dockerd dumps its goroutines the same way). A build
that seems stuck is diagnosed without stopping the daemon or attaching a debugger."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import sys
import threading
from typing import TextIO

__all__ = ["dump_stacks"]


def dump_stacks(out: TextIO | None = None) -> None:
    """Write the threads' and the running loop's tasks' stacks to ``out`` (stderr). The
    tasks are read on the loop; the writing is a thread's, so that a stderr nobody reads
    (a full pipe) holds up that thread, never the loop."""
    out = out if out is not None else sys.stderr
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    text = io.StringIO()
    text.write(f"llbkitd: {len(tasks)} tasks\n")
    for task in tasks:
        text.write(f"--- task {task.get_name()}\n")
        for where in _awaiting(task.get_coro()):
            text.write(f"  {where}\n")
    text.write("llbkitd: threads\n")
    said = text.getvalue()

    def write() -> None:
        with contextlib.suppress(OSError, ValueError):
            out.write(said)
            out.flush()
            # a stream without a file descriptor (a test's) gets no threads' stacks
            with contextlib.suppress(AttributeError, io.UnsupportedOperation):
                faulthandler.dump_traceback(out, all_threads=True)
            out.flush()

    threading.Thread(target=write, name="llbkitd-stacks", daemon=True).start()


def _awaiting(coro: object, limit: int = 60) -> list[str]:
    """Where ``coro`` and what it awaits, down to the innermost, are suspended (``Task``'s
    own ``get_stack`` shows the outermost frame alone). Coroutines, generators and async
    generators of any make (grpcio's are Cython's) are followed by their standard
    attributes."""
    lines: list[str] = []
    while coro is not None and len(lines) < limit:
        frame = next(
            (f for a in ("cr_frame", "gi_frame", "ag_frame") if (f := getattr(coro, a, None))),
            None,
        )
        if frame is not None:
            code = frame.f_code
            # a suspended frame may have no line number (asyncio's printer fails on it)
            lines.append(f"{code.co_filename}:{frame.f_lineno or '?'} in {code.co_name}")
        else:
            lines.append(repr(coro))
        coro = next(
            (n for a in ("cr_await", "gi_yieldfrom", "ag_await") if (n := getattr(coro, a, None))),
            None,
        )
    return lines
