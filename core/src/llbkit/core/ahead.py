"""Imports done while a build waits on the network.

A process per build imports what each step needs when the step first runs: the unpacker and
its inflater after the image's manifest has come back, on the build's critical path. Asking
a registry leaves the interpreter idle for tens of milliseconds; :func:`meanwhile` spends that
time importing the modules the next steps will need, one at a time, looking for the answer
between two (a module's import takes a few milliseconds at most: that is the longest the
answer waits).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import anyio.lowlevel

from llbkit.core.errors import first_error

__all__ = ["meanwhile", "want"]

T = TypeVar("T")

#: what a build will very likely need, but imports only when a step first runs (in order)
_WANTED: dict[str, None] = {}


def want(*modules: str) -> None:
    """Have ``modules`` imported at the next wait :func:`meanwhile` covers, after its own: for
    what is imported lazily (a build whose steps are all cached never runs the executor) but
    is most often needed soon. Without a wait, they are imported where they are needed."""
    for name in modules:
        _WANTED.setdefault(name)


async def meanwhile(work: Callable[[], Awaitable[T]], modules: Sequence[str]) -> T:
    """``work()``'s result (or error), the ``modules`` (then the ones :func:`want` asked for)
    not imported yet imported while it has not come. A module that cannot be imported is left
    to fail where it is needed."""
    missing = [name for name in dict.fromkeys([*modules, *_WANTED]) if name not in sys.modules]
    if not missing:
        return await work()
    result: list[T] = []
    done = anyio.Event()

    async def run() -> None:
        try:
            result.append(await work())
        finally:
            done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            for name in missing:
                await anyio.lowlevel.checkpoint()  # the answer, if it came, goes first
                if done.is_set():
                    break
                try:
                    __import__(name)
                except Exception:  # its own step says why, if it needs it
                    continue
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return result[0]
