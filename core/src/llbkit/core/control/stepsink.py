"""Progress of a step that is not a vertex of the definition: an export's sub-steps, a
frontend's own steps (``[internal] load build definition``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from llbkit.core.plugins.progress import ProgressEvent, VertexLog, VertexStatus, VertexWarning

__all__ = ["StepSink"]


class StepSink:
    """A ``ProgressSink`` for step ``digest``; ``start`` shows the step itself, once, before the
    first thing reported under it (a step with nothing to say is never shown)."""

    def __init__(
        self,
        emit: Callable[[ProgressEvent], None],
        digest: str,
        start: Callable[[], None] | None = None,
    ) -> None:
        self.emit = emit
        self.digest = digest
        self._start = start
        self._started: dict[str, float] = {}

    def begin(self) -> None:
        """Show the step (once), before anything reported under it."""
        if self._start is not None:
            self._start()
            self._start = None

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        self.begin()
        now = time.time()
        # BuildKit's clients show a status only once it says when it started.
        started = self._started.setdefault(id, now)
        self.emit(
            VertexStatus(
                id,
                self.digest,
                now,
                current=current,
                total=total,
                started=started,
                completed=now if done else None,
            )
        )

    def log(self, data: bytes, *, stream: int = 1) -> None:
        self.begin()
        self.emit(VertexLog(self.digest, time.time(), stream, bytes(data)))

    def warn(self, message: str, *, detail: Sequence[str] = (), url: str = "") -> None:
        self.begin()
        self.emit(VertexWarning(self.digest, time.time(), message, 1, tuple(detail), url))
