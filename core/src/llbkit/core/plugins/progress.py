"""A build's progress as data: BuildKit's ``SolveStatus`` parts, typed, and the sink drivers
report to.

The four record kinds mirror ``control.proto`` (``Vertex``, ``VertexStatus``, ``VertexLog``,
``VertexWarning``); a :class:`SolveStatus` is a batch of them, as ``Controller.status`` streams
them and ``--progress rawjson`` prints them. Times are seconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ProgressEvent",
    "ProgressSink",
    "SolveStatus",
    "Vertex",
    "VertexLog",
    "VertexStatus",
    "VertexWarning",
]


@dataclass(frozen=True)
class Vertex:
    """A step's state: named, started, completed (from the cache or not), or failed.

    Each change is a new record for the same ``digest``; the latest one holds.
    """

    digest: str
    name: str
    inputs: tuple[str, ...] = ()
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""
    progress_group: str = ""


@dataclass(frozen=True)
class VertexStatus:
    """A sub-task of a step (a layer download, ``exporting layers``); the latest record of an
    ``id`` holds."""

    id: str
    vertex: str
    timestamp: float
    name: str = ""
    current: int = 0
    total: int = 0
    started: float | None = None
    completed: float | None = None


@dataclass(frozen=True)
class VertexLog:
    """Output of a step: ``stream`` 1 is stdout, 2 stderr. Never clipped."""

    vertex: str
    timestamp: float
    stream: int
    data: bytes


@dataclass(frozen=True)
class VertexWarning:
    """Something the user should know about a step, or about the build (``vertex`` empty).

    :param level: 1 for a warning, as BuildKit's frontends use it.
    :param detail: further lines of explanation.
    :param url: where to read more.
    :param source: where in the build's source (a Dockerfile line) it comes from, if known.
    """

    vertex: str
    timestamp: float
    short: str
    level: int = 1
    detail: tuple[str, ...] = ()
    url: str = ""
    source: str = ""


ProgressEvent = Vertex | VertexStatus | VertexLog | VertexWarning


@dataclass(frozen=True)
class SolveStatus:
    """A batch of progress records, grouped by kind as BuildKit's are; :meth:`events` gives
    them in the order they happened."""

    vertexes: tuple[Vertex, ...] = ()
    statuses: tuple[VertexStatus, ...] = ()
    logs: tuple[VertexLog, ...] = ()
    warnings: tuple[VertexWarning, ...] = ()
    order: tuple[ProgressEvent, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, events: Sequence[ProgressEvent]) -> SolveStatus:
        """Group events into one batch, keeping their order."""
        return cls(
            tuple(e for e in events if isinstance(e, Vertex)),
            tuple(e for e in events if isinstance(e, VertexStatus)),
            tuple(e for e in events if isinstance(e, VertexLog)),
            tuple(e for e in events if isinstance(e, VertexWarning)),
            tuple(events),
        )

    def events(self) -> list[ProgressEvent]:
        """The records of the batch in the order they happened (vertexes first for a batch
        made by hand)."""
        if self.order:
            return list(self.order)
        return [*self.vertexes, *self.statuses, *self.logs, *self.warnings]


class ProgressSink(Protocol):
    """Where a driver reports what it is doing; the engine turns calls into progress records
    of the step the driver works for."""

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        """Report a sub-task (a layer download, "exporting layers"); call again to update it."""

    def log(self, data: bytes, *, stream: int = 1) -> None:
        """Append output (``stream`` 1 for stdout, 2 for stderr) to the step's log."""

    def warn(self, message: str, *, detail: Sequence[str] = (), url: str = "") -> None:
        """Attach a warning to the step (an option without effect, a deprecated form)."""
