"""One foreground ``runc run`` or ``runc exec``, with its process's standard streams served.

runc stays in the foreground so that its exit status is the process's: a detached process is
left to whichever ancestor reaps orphans, and only that one learns how it ended. So a terminal
is made runc's way for a foreground run (it takes ``--console-socket`` only when it detaches):
given a terminal on its standard input, runc makes the container's pty, copies between the
two, and copies the size across on ``SIGWINCH``.

The process has started once runc writes ``--pid-file``, which it does after releasing the
process to ``execve``; the file is renamed into place, so it is whole when it exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import termios
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from tty import setraw
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from llbkit.core.plugins.stdio import ProcessIO, WindowSize

if TYPE_CHECKING:
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.stdio import ByteReceiver, ByteSender, WindowSizes

__all__ = ["call_runc", "wait_for_file"]

#: the terminal's end-of-file character: how input ends on a terminal, which cannot be closed
VEOF = b"\x04"
#: the size of a terminal until the caller sends one (a VT100's)
DEFAULT_SIZE = WindowSize(rows=24, cols=80)
#: how long runc may take to start or give up once the call is cancelled
_STOP_GRACE = 10.0


async def call_runc(
    command: Sequence[str],
    *,
    tty: bool,
    io: ProcessIO | None,
    log: ProgressSink,
    pidfile: Path,
    on_start: Callable[[], None] | None = None,
) -> int:
    """Run ``command`` (a runc invocation with ``--pid-file pidfile``) and return its status.

    ``on_start()`` is called once the process runs, and before this returns if it ran at all;
    without it the pid file is not watched, so a plain exec step polls nothing. Output goes to
    ``io`` where given, else to ``log``. Cancelled, the process is killed.
    """
    io = io or ProcessIO()
    master = slave = -1
    stdin: int
    if tty:
        master, slave = os.openpty()
        # Raw before anything is written: a cooked terminal would turn VEOF into runc's EOF.
        setraw(slave)
        termios.tcsetwinsize(master, (DEFAULT_SIZE.rows, DEFAULT_SIZE.cols))
        os.set_blocking(master, False)
        stdin = slave
    else:
        stdin = subprocess.PIPE if io.stdin is not None else subprocess.DEVNULL
    try:
        proc = await anyio.open_process(list(command), stdin=stdin)
    except BaseException:  # no runc to serve: only the terminal needs closing
        if master >= 0:
            os.close(master)
        raise
    finally:
        if slave >= 0:
            os.close(slave)
    try:
        return await _serve(proc, io=io, log=log, pidfile=pidfile, on_start=on_start, master=master)
    except BaseException:  # cancelled, or a caller's stream failed: the process must not stay
        with anyio.CancelScope(shield=True):
            await _stop(proc, pidfile)
            await proc.aclose()
        raise
    finally:
        if master >= 0:
            os.close(master)


async def _serve(
    proc: Process,
    *,
    io: ProcessIO,
    log: ProgressSink,
    pidfile: Path,
    on_start: Callable[[], None] | None,
    master: int,
) -> int:
    assert proc.stdout is not None and proc.stderr is not None
    started = False

    def start() -> None:
        nonlocal started
        if on_start is not None and not started:
            started = True
            on_start()

    async def watch() -> None:
        await wait_for_file(pidfile)
        start()

    async with anyio.create_task_group() as tg:
        if on_start is not None:
            tg.start_soon(watch)
        if master >= 0:
            tg.start_soon(_feed_terminal, io.stdin, master)
            if io.resize is not None:
                tg.start_soon(_resize, io.resize, master, proc)
        elif io.stdin is not None:
            assert proc.stdin is not None
            tg.start_soon(_feed_pipe, io.stdin, proc.stdin)
        async with anyio.create_task_group() as out:
            out.start_soon(_pump, proc.stdout, io.stdout, log, 1)
            out.start_soon(_pump, proc.stderr, io.stderr, log, 2)
        code = await proc.wait()
        tg.cancel_scope.cancel()
    if pidfile.exists():
        start()
    return code


async def wait_for_file(path: Path, *, unless: anyio.Event | None = None) -> bool:
    """Wait until ``path`` exists, or ``unless`` is set; return whether it exists. Checks often
    at first: a container starts in milliseconds."""
    delay = 0.001
    while not path.exists():
        if unless is not None and unless.is_set():
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


async def _stop(proc: Process, pidfile: Path) -> None:
    """Kill the process once runc has started it (or wait for runc to give up), then reap
    runc. Killing the process, not runc, is what ends a container: runc then cleans up."""
    deadline = anyio.current_time() + _STOP_GRACE
    while proc.returncode is None:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            break
        if anyio.current_time() > deadline:
            with contextlib.suppress(ProcessLookupError):  # runc ended meanwhile
                proc.kill()
            break
        await anyio.sleep(0.005)
    await proc.wait()


async def _chunks(source: ByteReceiver) -> AsyncIterator[bytes]:
    while True:
        try:
            yield await source.receive()
        except anyio.EndOfStream:  # how the caller says the input is over
            return


async def _pump(
    stream: ByteReceiveStream, dest: ByteSender | None, log: ProgressSink, number: int
) -> None:
    async for chunk in stream:
        if dest is not None:
            await dest.send(chunk)
        else:
            log.log(chunk, stream=number)


async def _feed_pipe(source: ByteReceiver, sink: ByteSendStream) -> None:
    try:
        async for chunk in _chunks(source):
            await sink.send(chunk)
    except (OSError, anyio.BrokenResourceError):
        pass  # the process closed its input: what is left has no reader
    finally:
        with contextlib.suppress(OSError):  # already broken, nothing to flush
            await sink.aclose()


async def _feed_terminal(source: ByteReceiver | None, master: int) -> None:
    try:
        if source is not None:
            async for chunk in _chunks(source):
                await _write(master, chunk)
        await _write(master, VEOF)
    except OSError:
        pass  # EIO: runc has gone and the terminal with it


async def _write(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            await anyio.sleep(0.01)  # the process is not reading; the terminal is full


async def _resize(sizes: WindowSizes, master: int, proc: Process) -> None:
    while True:
        try:
            size = await sizes.receive()
        except anyio.EndOfStream:  # no more changes: the size stays
            return
        termios.tcsetwinsize(master, (size.rows, size.cols))
        with contextlib.suppress(ProcessLookupError):  # runc has ended: nothing to resize
            proc.send_signal(signal.SIGWINCH)
