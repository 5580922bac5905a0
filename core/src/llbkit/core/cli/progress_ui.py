"""Showing a build's progress: ``plain`` as BuildKit prints it, a live ``tty`` view, ``rawjson``.

Nothing is clipped: ``plain`` prints every log line of every step, ``tty`` keeps the last lines
of running steps on screen and prints the whole log of a failed step at the end, and the full
event stream is kept with the build in the store either way.
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from llbkit.core.errors import UserError
from llbkit.core.plugins.progress import (
    ProgressEvent,
    SolveStatus,
    Vertex,
    VertexLog,
    VertexStatus,
    VertexWarning,
)
from llbkit.core.units import format_bytes

__all__ = ["Display", "make_display", "open_trace", "status_json", "trace_json"]


@dataclass
class _Vertex:
    digest: str
    name: str = ""
    index: int = 0
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""
    canceled: bool = False
    shown: bool = False
    done_printed: bool = False
    logs: list[str] = field(default_factory=list)
    partial: str = ""
    #: when the unfinished line began (its stamp, as plain progress prints it), or None
    partial_stamp: str | None = None
    #: output arrives in chunks that may split a character
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: each time it ran, by its start: a step reopened after it ended (a source found cached,
    #: then fetched for a later step) counts the time of both, not the wait between
    intervals: dict[float, float | None] = field(default_factory=dict)

    def took(self) -> float:
        """The time it ran: its intervals merged, as BuildKit's printer adds them up."""
        total, reach = 0.0, None
        for start, ended in sorted(self.intervals.items()):
            stop = ended if ended is not None else self.completed or start
            if reach is None or start > reach:
                total += stop - start
                reach = stop
            elif stop > reach:
                total += stop - reach
                reach = stop
        return total


class Display:
    """Base: tracks vertices; subclasses print."""

    #: whether :meth:`close` prints failed steps' logs itself (the CLI must not repeat them)
    shows_failed_logs = False

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.vertices: dict[str, _Vertex] = {}
        self.order: dict[str, None] = {}  # first-seen order, found in O(1)
        self.begin = time.time()

    def _vertex(self, digest: str) -> _Vertex:
        v = self.vertices.get(digest)
        if v is None:
            v = self.vertices[digest] = _Vertex(digest)
        return v

    def _update(self, event: ProgressEvent) -> _Vertex:
        v = self._vertex(event.digest if isinstance(event, Vertex) else event.vertex)
        if isinstance(event, Vertex):
            v.name = event.name or v.name
            if (
                event.started
                and v.completed
                and not event.completed
                and event.started not in v.intervals  # not a start seen before, sent again
            ):
                # Reopened: running again, as BuildKit's display takes the step anew, until
                # it ends again (its end then shown once more, with both times added).
                v.started, v.completed, v.cached, v.done_printed = event.started, None, False, False
            if event.started and v.started is None:
                v.started = event.started
            if event.started:
                v.intervals[event.started] = event.completed
            if event.completed:
                v.completed = event.completed
            v.cached = v.cached or event.cached
            v.error = event.error or v.error
            # As BuildKit's display: an error ending in "context canceled" is a cancellation.
            v.canceled = v.canceled or event.error.endswith("context canceled")
        return v

    def __call__(self, status: SolveStatus) -> None:
        # In the order they happened: a step's output and warnings before its end.
        for event in status.events():
            self.show(event)

    def show(self, event: ProgressEvent) -> None:
        raise NotImplementedError

    def failed_steps(self) -> list[tuple[str, list[str]]]:
        """The steps that failed (not those cancelled), with their output."""
        return [
            (v.name, v.logs + ([v.partial] if v.partial else []))
            for v in self.vertices.values()
            if v.error and not v.canceled
        ]

    def close(self, failed: bool = False) -> None:
        """Finish the display once the build is over (may be called twice)."""


#: how long a step's news waits while another step's block is open, at most (by the records'
#: times): BuildKit's printer turns to another step after about that long (its anti-flicker)
SWITCH_AFTER = 5.0
#: buildctl prints what came at most every 100 ms, and 150 ms after its last print at the latest
BATCH = 0.1
TICK = 0.15


def _digest(event: ProgressEvent) -> str:
    return event.digest if isinstance(event, Vertex) else event.vertex


def _as_buildctl_sees(batch: list[ProgressEvent]) -> list[ProgressEvent]:
    """A batch's records as buildctl's printer finds them, the latest state of each: a
    sub-task's last record only, and a step that ended and began again in the batch (a source
    found cached, reopened at once to fetch it) not ended in between."""
    last_status: dict[tuple[str, str], int] = {}
    for n, event in enumerate(batch):
        if isinstance(event, VertexStatus):
            last_status[event.vertex, event.id] = n
    later_start: dict[str, float] = {}
    seen: list[ProgressEvent] = []
    for n in range(len(batch) - 1, -1, -1):
        event = batch[n]
        if isinstance(event, VertexStatus) and last_status[event.vertex, event.id] != n:
            continue
        if isinstance(event, Vertex):
            again = later_start.get(event.digest)
            if event.completed and again is not None and again != event.started:
                event = replace(event, completed=None, cached=False)
            elif event.started and not event.completed:
                later_start[event.digest] = event.started
        seen.append(event)
    seen.reverse()
    return seen


class PlainDisplay(Display):
    """BuildKit's ``--progress=plain``.

    As buildctl's printer: what comes is printed in batches, at most every :data:`BATCH` (by
    the records' own times, a timer printing what waits when no record comes), the steps that
    ended in a batch first, in the order they ended, each whole. A step's block stays open
    while the step runs: what other running steps show meanwhile waits (about
    :data:`SWITCH_AFTER` at most) and is shown as one block of theirs, when the open one ends.
    Printing each record as it came instead interleaves steps that overlap by a few
    milliseconds (``#1 ...``, ``#2 ...``, ``#1`` again) where buildctl shows two blocks.
    """

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        self.current: str | None = None
        self.first = True
        self.count = 0
        #: each sub-task's last progress shown, and when (buildctl shows 5 % or 5 s more)
        self.shown_status: dict[tuple[str, str], tuple[int, float]] = {}
        #: what came since the last batch was printed, and that batch's time (the records')
        self.pending: list[ProgressEvent] = []
        self.printed_at: float | None = None
        #: the step whose block is open (its turn), though a step that ended may show between
        self.keeper: str | None = None
        #: what other steps sent while one's block was open, by step, and since when
        self.held: dict[str, list[ProgressEvent]] = {}
        self.held_since: dict[str, float] = {}
        #: the latest record's time, and when it came (by this process's clock)
        self.last_time = 0.0
        self.came = time.monotonic()
        self.lock = threading.Lock()  # the timer prints what waits
        self.timer: threading.Timer | None = None
        self.timer_due = 0.0
        self.closed = False

    def _switch(self, v: _Vertex) -> None:
        """Make ``v`` the vertex being printed: ``#N ...`` for the one left open, a header."""
        if self.current == v.digest:
            return
        old = self.vertices.get(self.current) if self.current else None
        if old is not None and not old.done_printed:
            self.out.write(f"#{old.index} ...\n")
        if not v.shown:
            self.count += 1
            v.index = self.count
            v.shown = True
        if not self.first:
            self.out.write("\n")
        self.first = False
        self.out.write(f"#{v.index} {v.name}\n")
        self.current = v.digest

    def _turn(self) -> bool:
        """Whether a step's block is open (shown, not ended): others wait for it."""
        v = self.vertices.get(self.keeper) if self.keeper else None
        return v is not None and v.shown and not v.done_printed

    def show(self, event: ProgressEvent) -> None:
        with self.lock:
            when = (
                event.completed or event.started if isinstance(event, Vertex) else event.timestamp
            )
            self.last_time, self.came = max(self.last_time, when or 0.0), time.monotonic()
            ticked = self.printed_at is not None and self.last_time >= self.printed_at + TICK
            if self.pending and ticked:
                # buildctl's ticker printed what waited before this record came
                self.printed_at = (self.printed_at or 0.0) + TICK
                self._print_batch()
            self.pending.append(event)
            if self.printed_at is None:
                # The first batch starts with the first record (buildctl prints its first
                # message at once, and the daemon's first holds the steps begun together).
                self.printed_at = self.last_time
            elif self.last_time - self.printed_at >= BATCH:
                self.printed_at = self.last_time
                self._print_batch()
            self._arm()

    def _print_batch(self) -> None:
        """Print what came since the last batch as buildctl does: the steps that ended first
        (the open one before the others, then in the order they ended), then the open step's
        news, then the rest in the order it came (waiting behind an open block)."""
        events, self.pending = _as_buildctl_sees(self.pending), []
        last: dict[str, Vertex] = {}
        for event in events:
            if isinstance(event, Vertex):
                last[event.digest] = event
        ended = sorted((e.completed, d) for d, e in last.items() if e.completed)
        order = [d for _, d in ended]
        if self.keeper in order:
            order.remove(self.keeper)
            order.insert(0, self.keeper)
        if self.keeper is not None and self.keeper not in order:
            order.append(self.keeper)
        by_step: dict[str, list[ProgressEvent]] = {}
        for event in events:
            by_step.setdefault(_digest(event), []).append(event)
        for digest in order:
            for event in by_step.pop(digest, ()):
                self._route(event)
        for event in events:
            if _digest(event) in by_step:
                self._route(event)
        self._release_overdue(self.last_time)
        self._release_waiting()
        self.out.flush()

    def _route(self, event: ProgressEvent) -> None:
        """Print ``event``, or keep it while another step's block is open (a step that ended
        is shown at once, whole, and the open block keeps its turn)."""
        digest = _digest(event)
        if digest in self.held or (digest != self.keeper and self._turn()):
            # After what it sent before, if that waits too.
            self.held.setdefault(digest, []).append(event)
            self.held_since.setdefault(digest, self.last_time)
            if not self._turn():
                self._release(digest)
            elif isinstance(event, Vertex) and event.completed:
                self._release(digest, turn=False)
        else:
            self._print(event)
            self.keeper = digest

    def _release_overdue(self, now: float) -> None:
        """Turn to the step that has waited longest, once it has waited :data:`SWITCH_AFTER`
        (``now`` by the records'): one at a time, as buildctl turns to one per print."""
        oldest = next(iter(self.held_since.items()), None)  # in the order they began to wait
        if oldest is not None and now - oldest[1] >= SWITCH_AFTER:
            self._release(oldest[0])

    def _release(self, digest: str, *, turn: bool = True) -> None:
        """Show what ``digest`` sent while it waited (its block opens; with ``turn``, the
        others wait for it)."""
        self.held_since.pop(digest, None)
        for event in self.held.pop(digest, ()):
            self._print(event)
        if turn:
            self.keeper = digest

    def _release_waiting(self) -> None:
        """No block open: the steps that waited are shown in the order they began to wait
        until one's block stays open (one that ended never waits: it is shown at once)."""
        while self.held and not self._turn():
            self._release(next(iter(self.held)))

    def _arm(self) -> None:
        """A timer for what waits: the next batch's print, or a step waiting its turn."""
        if self.closed or not (self.pending or self.held):
            return
        due = time.monotonic() + (TICK if self.pending else SWITCH_AFTER)
        if self.timer is not None:
            if self.timer_due <= due:
                return
            self.timer.cancel()
        self.timer, self.timer_due = threading.Timer(due - time.monotonic(), self._expire), due
        self.timer.daemon = True  # never keeps the process (its exit joins the others)
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:
            self.timer = None
            if self.closed:
                return
            # The records' time now: the latest one's, and what has passed since it came.
            now = self.last_time + time.monotonic() - self.came
            if self.pending and now - (self.printed_at or 0.0) >= BATCH:
                self.printed_at = now
                self._print_batch()
            self._release_overdue(now)
            self._release_waiting()
            self.out.flush()
            self._arm()

    def _print(self, event: ProgressEvent) -> None:
        v = self._update(event)
        if isinstance(event, Vertex):
            if v.started is None and not v.cached and not v.completed:
                return
            if v.done_printed:
                return  # ended and shown: a copy of a record changes nothing
            self._switch(v)
            if v.completed and not v.done_printed:
                self._finish(v)
        elif isinstance(event, VertexLog):
            self._switch(v)
            since = event.timestamp - (v.started or event.timestamp)
            stamp = (
                f"{since:.3f}" if since < 10 else f"{since:.2f}" if since < 100 else f"{since:.1f}"
            )
            # As BuildKit's printer: a line is stamped when its first bytes arrive.
            pieces = v.decoder.decode(event.data).split("\n")
            for n, piece in enumerate(pieces):
                if n == 0 and v.partial_stamp is not None:
                    line, line_stamp = v.partial + piece, v.partial_stamp
                else:
                    line, line_stamp = piece, stamp
                if n < len(pieces) - 1:
                    v.logs.append(line)
                    self.out.write(f"#{v.index} {line_stamp} {line}\n")
                    v.partial, v.partial_stamp = "", None
                elif line:
                    v.partial, v.partial_stamp = line, line_stamp
        elif isinstance(event, VertexStatus):
            # A sub-task begun and ended within a batch shows only as done (the batch holds
            # its last record); one still running when its batch is printed shows as begun.
            shown = self.shown_status.get((event.vertex, event.id))
            if shown is not None and not event.completed:
                progress = (event.current - shown[0]) / event.total if event.total > 0 else 0.0
                if progress < 0.05 and event.timestamp - shown[1] < 5:
                    return  # as buildctl: too little news since the line before
            self._status(v, event)
        else:
            self._switch(v)
            self.out.write(f"#{v.index} WARN: {event.short}\n")

    def _status(self, v: _Vertex, event: VertexStatus) -> None:
        self._switch(v)
        size = ""
        if event.total:
            size = f" {format_bytes(event.current)} / {format_bytes(event.total)}"
        elif event.current:
            size = f" {format_bytes(event.current)}"
        took = ""
        if event.started:
            # As BuildKit's printer: the time so far (or taken), when over 10 ms.
            spent = (event.completed or event.timestamp) - event.started
            took = f" {spent:.1f}s" if spent > 0.01 else ""
        done = " done" if event.completed else ""
        self.out.write(f"#{v.index} {event.id}{size}{took}{done}\n")
        self.shown_status[event.vertex, event.id] = (event.current, event.timestamp)

    def close(self, failed: bool = False) -> None:
        with self.lock:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.pending:
                self._print_batch()
            while self.held:
                self.keeper = None  # the build is over: whatever waited is shown
                self._release_waiting()
            self.out.flush()

    def _finish(self, v: _Vertex) -> None:
        if v.partial:
            self.out.write(f"#{v.index} {v.partial_stamp} {v.partial}\n")
            v.logs.append(v.partial)
            v.partial, v.partial_stamp = "", None
        if v.canceled:
            self.out.write(f"#{v.index} CANCELED\n")
        elif v.error:
            self.out.write(f"#{v.index} ERROR: {v.error}\n")
        elif v.cached:
            self.out.write(f"#{v.index} CACHED\n")
        else:
            self.out.write(f"#{v.index} DONE {v.took():.1f}s\n")
        v.done_printed = True
        self.current = None


def _time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class RawJSONDisplay(Display):
    """One ``SolveStatus`` JSON object per batch, with BuildKit's field names."""

    def __call__(self, status: SolveStatus) -> None:
        found = status_json(status)
        if found:
            self.out.write(json.dumps(found, separators=(",", ":")) + "\n")
            self.out.flush()


def status_json(status: SolveStatus) -> dict[str, list[dict[str, Any]]]:
    """A ``SolveStatus`` as JSON objects (``rawjson``; ``--trace`` is :func:`trace_json`)."""
    found: dict[str, list[dict[str, Any]]] = {}
    if status.vertexes:
        found["vertexes"] = [_vertex_json(v) for v in status.vertexes]
    if status.statuses:
        found["statuses"] = [_status_json(s) for s in status.statuses]
    if status.logs:
        found["logs"] = [
            {
                "vertex": log.vertex,
                "stream": log.stream,
                "data": base64.b64encode(log.data).decode(),
                "timestamp": _time(log.timestamp),
            }
            for log in status.logs
        ]
    if status.warnings:
        found["warnings"] = [_warning_json(w) for w in status.warnings]
    return found


def _go_time(ts: float | None) -> str | None:
    """Go's RFC 3339 with the fraction's trailing zeros dropped, as ``time.Time`` encodes."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0")
    return text.rstrip(".") + "Z"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def open_trace(path: str) -> IO[str]:
    """``--trace FILE``: appended to, created private (0600) as buildctl creates it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as err:
        raise UserError(f"--trace {path}: {err.strerror}") from None
    return os.fdopen(fd, "a", encoding="utf-8")


def trace_json(status: SolveStatus) -> str:
    """A ``SolveStatus`` as buildctl v0.11's ``--trace`` writes it: Go's default encoding of
    ``client.SolveStatus`` (field names as declared, every field, ``null`` for none)."""
    vertexes = [
        {
            "Digest": v.digest,
            "Inputs": list(v.inputs) or None,
            "Name": v.name,
            "Started": _go_time(v.started),
            "Completed": _go_time(v.completed),
            "Cached": v.cached,
            "Error": v.error,
            "ProgressGroup": {"id": v.progress_group} if v.progress_group else None,
        }
        for v in status.vertexes
    ]
    statuses = [
        {
            "ID": s.id,
            "Vertex": s.vertex,
            "Name": s.name,
            "Total": s.total,
            "Current": s.current,
            "Timestamp": _go_time(s.timestamp),
            "Started": _go_time(s.started),
            "Completed": _go_time(s.completed),
        }
        for s in status.statuses
    ]
    logs = [
        {
            "Vertex": log.vertex,
            "Stream": log.stream,
            "Data": _b64(log.data),
            "Timestamp": _go_time(log.timestamp),
        }
        for log in status.logs
    ]
    warnings = [
        {
            "Vertex": w.vertex,
            "Level": w.level,
            "Short": _b64(w.short.encode()),
            "Detail": [_b64(d.encode()) for d in w.detail] or None,
            "URL": w.url,
            "SourceInfo": None,
            "Range": None,
        }
        for w in status.warnings
    ]
    found = {
        "Vertexes": vertexes or None,
        "Statuses": statuses or None,
        "Logs": logs or None,
        "Warnings": warnings or None,
    }
    return json.dumps(found, separators=(",", ":"))


def _vertex_json(v: Vertex) -> dict[str, Any]:
    vertex = {
        "digest": v.digest,
        "inputs": list(v.inputs) or None,
        "name": v.name,
        "started": _time(v.started),
        "completed": _time(v.completed),
        "cached": v.cached or None,
        "error": v.error or None,
        "progressGroup": {"id": v.progress_group} if v.progress_group else None,
    }
    return {k: x for k, x in vertex.items() if x is not None}


def _status_json(s: VertexStatus) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": s.id,
        "vertex": s.vertex,
        "current": s.current,
        "timestamp": _time(s.timestamp),
    }
    if s.name:
        item["name"] = s.name
    if s.total:
        item["total"] = s.total
    if s.started:
        item["started"] = _time(s.started)
    if s.completed:
        item["completed"] = _time(s.completed)
    return item


def _warning_json(w: VertexWarning) -> dict[str, Any]:
    item: dict[str, Any] = {
        "level": w.level,
        "short": base64.b64encode(w.short.encode()).decode(),
    }
    if w.vertex:  # a build's own warning (a frontend's) belongs to no step
        item = {"vertex": w.vertex, **item}
    if w.detail:
        item["detail"] = [base64.b64encode(d.encode()).decode() for d in w.detail]
    if w.url:
        item["url"] = w.url
    return item


class TTYDisplay(Display):
    """A live view: one line per started step with its timer, the tail of running output."""

    shows_failed_logs = True

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out, highlight=False)
        rate = int(os.environ.get("TTY_DISPLAY_RATE", "150") or 150)
        self.live = Live(
            console=self.console,
            refresh_per_second=1000 / max(rate, 50),
            get_renderable=self._render,
            transient=False,
        )
        self.live.start()

    def show(self, event: ProgressEvent) -> None:
        v = self._update(event)
        self.order.setdefault(v.digest)
        if isinstance(event, VertexLog):
            text = v.partial + v.decoder.decode(event.data)
            lines = text.split("\n")
            v.partial = lines.pop()
            v.logs.extend(lines)

    def _render(self) -> Any:
        from rich.text import Text

        now = time.time()
        shown = [
            self.vertices[d]
            for d in self.order
            if self.vertices[d].started or self.vertices[d].cached
        ]
        done = sum(1 for v in shown if v.completed)
        text = Text()
        finished = " FINISHED" if self._closed else ""
        text.append(
            f"[+] Building {now - self.begin:.1f}s ({done}/{len(shown)}){finished}\n",
            style="bold blue" if finished else "",
        )
        width = self.console.width
        for v in shown:
            prefix = (
                "CANCELED "
                if v.canceled
                else "ERROR "
                if v.error
                else ("CACHED " if v.cached else "")
            )
            end = v.completed or now
            timer = f" {end - (v.started or end):.1f}s"
            line = f" => {prefix}{v.name}"
            room = width - len(timer)
            line = (line[: room - 1] + "…") if len(line) > room else line.ljust(room)
            style = "red" if v.error else "blue" if v.completed else ""
            text.append(line + timer + "\n", style=style)
            if not v.completed:
                for log in (v.logs + ([v.partial] if v.partial else []))[-6:]:
                    text.append(f" => => # {log}"[:width] + "\n", style="dim")
        return text

    _closed = False

    def close(self, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self.live.update(self._render(), refresh=True)
        self.live.stop()
        for name, lines in self.failed_steps():
            self.console.print("------", highlight=False)
            self.console.print(f" > {name}:", highlight=False)
            for line in lines:
                self.console.print(line, highlight=False, markup=False)
            self.console.print("------", highlight=False)


class QuietDisplay(Display):
    def __call__(self, status: SolveStatus) -> None:
        return None


def make_display(mode: str, out: IO[str] | None = None) -> Display:
    """The display for ``--progress``; ``auto`` picks ``tty`` on a terminal, else ``plain``."""
    stream = out or sys.stderr
    if mode == "auto":
        mode = os.environ.get("BUILDKIT_PROGRESS", "") or ("tty" if stream.isatty() else "plain")
    if mode == "tty":
        return TTYDisplay(stream)
    if mode == "rawjson":
        return RawJSONDisplay(stream)
    if mode == "quiet":
        return QuietDisplay(stream)
    return PlainDisplay(stream)
