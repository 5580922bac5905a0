"""A process's standard streams, for workers and whoever runs processes interactively (the
Python API today; gateway containers and a ``debug shell`` to come): anyio's byte and memory
streams fit these protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ByteReceiver", "ByteSender", "ProcessIO", "WindowSize", "WindowSizes"]


class ByteReceiver(Protocol):
    """Where a process's input comes from: ``receive()`` returns the next bytes and raises
    ``anyio.EndOfStream`` at the end (anyio's byte and memory streams fit)."""

    async def receive(self) -> bytes: ...


class ByteSender(Protocol):
    """Where a process's output goes (anyio's byte and memory streams fit)."""

    async def send(self, item: bytes) -> None: ...


@dataclass(frozen=True)
class WindowSize:
    """A terminal's size, for processes with ``tty``."""

    rows: int
    cols: int


class WindowSizes(Protocol):
    """Terminal size changes; ``receive()`` raises ``anyio.EndOfStream`` when there are no more."""

    async def receive(self) -> WindowSize: ...


@dataclass(frozen=True)
class ProcessIO:
    """A process's standard streams, when the caller wants them instead of the step's log.

    :param stdin: read until it ends, then the process's input is closed (with ``tty``, the
        terminal's end-of-file character is sent); ``None`` gives an empty input.
    :param stdout: the process's output (with ``tty``, all of it); ``None`` sends it to the
        progress log.
    :param stderr: the error stream (unused with ``tty``); ``None`` sends it to the log.
    :param resize: terminal size changes, applied while the process runs (``tty`` only).
    """

    stdin: ByteReceiver | None = None
    stdout: ByteSender | None = None
    stderr: ByteSender | None = None
    resize: WindowSizes | None = None
