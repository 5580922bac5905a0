"""Build status: every progress record of a build, in order, to any number of readers.

Each build has a :class:`BuildStatus`: records are numbered, written to the build's journal
(``<root>/history/<ref>.jsonl``, kept afterwards: logs are never clipped) and kept in memory
only for a bounded window. A reader that falls behind the window reads the journal instead, so
a slow reader costs disk, never memory, and never holds the build up. Readers may attach
before the build starts (its ref is chosen by the client), while it runs, or after it ended.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from itertools import islice
from pathlib import Path
from typing import IO, Any

import anyio

from llbkit.core.plugins.progress import (
    ProgressEvent,
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)

__all__ = ["BuildStatus", "StatusBoard", "decode_event", "encode_event"]

#: records kept in memory per build; older ones are read back from the journal
WINDOW = 4096
#: records a reader is given per batch
BATCH = 512
#: seconds a woken reader waits for more records before taking them
GATHER = 0.005

_KINDS: dict[type, str] = {
    Vertex: "vertex",
    VertexStatus: "status",
    VertexLog: "log",
    VertexWarning: "warning",
}


def encode_event(event: ProgressEvent) -> dict[str, Any]:
    """A JSON object for one record (``kind`` plus its fields; log data in base64)."""
    # The records' fields are plain values (tuples of strings at most): no deep copy needed.
    fields = dict(vars(event))
    fields["kind"] = _KINDS[type(event)]
    if type(event) is VertexLog:
        fields["data"] = base64.b64encode(event.data).decode()
    return fields


#: one encoder for every journal line (the records hold only JSON's own types)
_encode = json.JSONEncoder(separators=(",", ":")).encode


def decode_event(obj: dict[str, Any]) -> ProgressEvent:
    """The record :func:`encode_event` wrote."""
    kind = obj.pop("kind")
    obj.pop("seq", None)
    if kind == "vertex":
        obj["inputs"] = tuple(obj.get("inputs") or ())
        return Vertex(**obj)
    if kind == "status":
        return VertexStatus(**obj)
    if kind == "log":
        obj["data"] = base64.b64decode(obj["data"])
        return VertexLog(**obj)
    obj["detail"] = tuple(obj.get("detail") or ())
    return VertexWarning(**obj)


class _Signal:
    """Wakes the readers of a build; may be fired from worker threads too. Costs nothing
    while no reader waits (a build emits thousands of records)."""

    def __init__(self) -> None:
        import anyio.lowlevel

        self._event: anyio.Event | None = None
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()

    def fire(self) -> None:
        if self._event is None:
            return
        if threading.get_ident() == self._thread:
            self._wake()
        else:
            import anyio.from_thread  # rare: most records come from the event loop's thread

            anyio.from_thread.run_sync(self._wake, token=self._token)

    def _wake(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, ready: Callable[[], bool]) -> None:
        """Wait until fired, unless ``ready()`` already holds once this waiter is armed (a
        record a worker thread added just before is not missed)."""
        if self._event is None:
            self._event = anyio.Event()
        event = self._event
        if not ready():
            await event.wait()


class BuildStatus:
    """The records of one build: numbered, journaled, the latest :data:`WINDOW` in memory."""

    def __init__(self, ref: str, journal: Path) -> None:
        self.ref = ref
        self.path = journal
        self._tmp = journal.with_name(f".{journal.name}")
        self._out: IO[bytes] | None = None
        self._written = 0
        self._window: deque[tuple[int, int, ProgressEvent]] = deque(maxlen=WINDOW)
        self._count = 0
        self._lock = threading.Lock()
        self._signal: _Signal | None = None
        self.started = False
        self.done = False
        #: readers attached now (a status nobody reads or builds is forgotten)
        self.readers = 0
        self._ended: anyio.Event | None = None

    def start(self) -> None:
        """The build began: open the journal (readers attached before now keep waiting)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self._tmp, "wb")  # noqa: SIM115 -- closed by finish
        self._signal = self._signal or _Signal()
        self.started = True
        self._signal.fire()

    def emit(self, event: ProgressEvent) -> None:
        """Add a record; never blocks on readers."""
        with self._lock:
            assert self._out is not None, "emit before start"
            fields = encode_event(event)
            fields["seq"] = self._count
            data = _encode(fields).encode() + b"\n"
            self._out.write(data)
            # Offsets counted, not asked for: a file's tell() costs more than the write.
            self._written += len(data)
            self._window.append((self._count, self._written, event))
            self._count += 1
        if self._signal is not None:
            self._signal.fire()

    def finish(self) -> None:
        """No more records: the journal is complete under its final name."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None
                self._tmp.rename(self.path)
            self.done = True
        if self._ended is not None:
            self._ended.set()
        if self._signal is not None:
            self._signal.fire()

    async def read(self) -> AsyncIterator[SolveStatus]:
        """Every record from the first, in batches (grouped by kind, as BuildKit's are), until
        the build is over."""
        async for events in self.records():
            for part in _reopenings(events):
                yield SolveStatus.of(part)

    async def records(self) -> AsyncIterator[list[ProgressEvent]]:
        """Every record from the first, in the order they happened, in chunks."""
        if self._signal is None:
            self._signal = _Signal()
        seq = 0
        offset = 0
        reader: IO[bytes] | None = None
        try:
            while True:
                with self._lock:
                    count, done = self._count, self.done
                    lagging = bool(self._window) and self._window[0][0] > seq and seq < count
                    # The newest records are at the window's end: take them from there.
                    fresh = [] if lagging else list(islice(reversed(self._window), count - seq))
                    window = fresh[::-1][:BATCH]
                    if lagging and self._out is not None:
                        self._out.flush()
                if lagging:
                    # Behind the window: the journal has what memory dropped.
                    if reader is None:
                        reader = self._open_journal()
                        reader.seek(offset)
                    events = []
                    for _ in range(BATCH):
                        line = reader.readline()
                        if not line.endswith(b"\n"):
                            break
                        events.append(decode_event(json.loads(line)))
                    offset = reader.tell()
                    seq += len(events)
                    if events:
                        yield events
                    continue
                if reader is not None:
                    reader.close()
                    reader = None
                if window:
                    seq = window[-1][0] + 1
                    offset = window[-1][1]
                    yield [e for _, _, e in window]
                    continue
                if done:
                    return
                await self._signal.wait(functools.partial(self._past, seq))
                if not self.done:
                    # Let records gather: one wake-up per few milliseconds, not per record
                    # (a step makes several, and readers share the build's event loop); the
                    # build's end cuts the wait short.
                    if self._ended is None:
                        self._ended = anyio.Event()
                    with anyio.move_on_after(GATHER):
                        await self._ended.wait()
        finally:
            if reader is not None:
                reader.close()

    def _past(self, seq: int) -> bool:
        """Whether there are records from ``seq`` on, or the build is over."""
        return self._count > seq or self.done

    def _open_journal(self) -> IO[bytes]:
        # The journal is renamed when the build ends; an open reader keeps reading it.
        for path in (self._tmp, self.path, self._tmp):
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue
        raise FileNotFoundError(self.path)


def read_journal(path: Path) -> list[ProgressEvent]:
    """Every record of a finished build's journal (readers take it batch by batch)."""
    with open(path, "rb") as journal:
        return [event for batch in iter(lambda: _next_batch(journal), []) for event in batch]


def _reopenings(events: list[ProgressEvent]) -> list[list[ProgressEvent]]:
    """``events`` cut before each step started again (a finished step's later work): a
    client keeps a batch's last record of a step, which would hide when it first started."""
    parts: list[list[ProgressEvent]] = [[]]
    started: dict[str, float | None] = {}
    for event in events:
        if isinstance(event, Vertex) and event.started is not None:
            if started.get(event.digest, event.started) != event.started:
                parts.append([])
                started.clear()
            started[event.digest] = event.started
        parts[-1].append(event)
    return parts


def _next_batch(journal: IO[bytes]) -> list[ProgressEvent]:
    """Up to :data:`BATCH` more records of a journal (none at its end)."""
    return [decode_event(json.loads(line)) for line in islice(journal, BATCH) if line.strip()]


class StatusBoard:
    """The builds of one Controller by ref, so a reader can attach to any of them."""

    def __init__(self, history: Path) -> None:
        self.history = history
        self._builds: dict[str, BuildStatus] = {}

    def open(self, ref: str) -> BuildStatus:
        """The status of build ``ref``, made now if nobody asked for it yet."""
        status = self._builds.get(ref)
        if status is None:
            status = self._builds[ref] = BuildStatus(ref, self.history / f"{ref}.jsonl")
        return status

    def taken(self, ref: str) -> bool:
        """Whether a build with ``ref`` runs or ran (its journal exists)."""
        status = self._builds.get(ref)
        return (status is not None and status.started) or (self.history / f"{ref}.jsonl").exists()

    def forget(self, ref: str) -> None:
        """The build is over and its journal complete: later readers read the journal."""
        self._builds.pop(ref, None)

    def active(self) -> list[str]:
        return [ref for ref, status in self._builds.items() if status.started and not status.done]

    async def stream(self, ref: str) -> AsyncIterator[SolveStatus]:
        """Every record of build ``ref``: a running or future build's as they come, a finished
        one's from its journal."""
        status = self._builds.get(ref)
        if status is None and (self.history / f"{ref}.jsonl").exists():
            # A finished build: its journal, a batch in memory at a time.
            with open(self.history / f"{ref}.jsonl", "rb") as journal:
                while events := await anyio.to_thread.run_sync(_next_batch, journal):
                    yield SolveStatus.of(events)
            return
        status = status or self.open(ref)
        status.readers += 1
        try:
            async for batch in status.read():
                yield batch
        finally:
            status.readers -= 1
            if not status.readers and not status.started:
                # Nobody waits for this ref any more, and no build took it.
                self._builds.pop(ref, None)
