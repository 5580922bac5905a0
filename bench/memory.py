"""Peak resident memory of a tool's processes during a timed phase, sampled from ``/proc``.

What is counted is what the machine needs for the build: the resident set of every process in
the trees of the commands the harness runs (a CLI and whatever it starts, e.g. runc and the
step's own processes) plus, for a tool with a daemon (llbkitd, buildkitd, dockerd), the
daemon's whole tree — its idle size included, since an embedded llbkit carries its engine in
the one process. The figure is the largest sum seen over samples every 20 ms, raised to the
largest single process's own high-water mark (``VmHWM``, the daemon's reset at the phase's
start) when a short peak fell between two samples.

cgroups are not used: the hosts we measure on mount the v2 hierarchy without the memory
controller, and a memory cgroup's peak counts the page cache of the files a build writes
(a 156 MB layer), which is the kernel's memory, not the tool's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL = 0.02

#: pids of the commands running now (``tools.run`` adds and removes them)
CLIENTS: set[int] = set()


def _parents() -> dict[int, int]:
    """Every process's parent, from ``/proc/PID/stat`` (the kernel has no children lists here)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:  # ended while we looked
            continue
        # The name, in parentheses, may hold spaces: the fields after it are fixed.
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[int(entry.name)] = int(fields[1])
    return out


def tree(roots: Iterable[int]) -> set[int]:
    """The roots and all their descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += children.get(pid, [])
    return found


def rss(pid: int) -> int:
    """Resident bytes of one process, 0 if it has ended."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0


def high_water(pid: int) -> int:
    """The most bytes the process has had resident (since start, or since ``reset_high_water``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def reset_high_water(pid: int) -> None:
    """Make the process's high-water mark its current size, so it says what this phase used."""
    # Not ours to reset: the sampled sum still holds.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class Peak:
    """Samples, on a thread, the summed resident memory of the trees under ``roots()``.

    ``roots`` is called at every sample, so commands started during the phase are seen."""

    def __init__(self, roots: Callable[[], Iterable[int]]) -> None:
        self._roots = roots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.bytes = 0
        self._single = 0

    def __enter__(self) -> Peak:
        for pid in self._roots():
            reset_high_water(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, self._single)

    def _sample(self) -> None:
        while True:
            roots = list(self._roots())
            self.bytes = max(self.bytes, sum(rss(pid) for pid in tree(roots)))
            self._single = max([self._single, *(high_water(pid) for pid in roots)])
            if self._stop.wait(INTERVAL):
                return
