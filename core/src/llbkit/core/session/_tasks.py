"""Running a DiffCopy side's tasks together, failing as one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from llbkit.core.session.errors import describe

__all__ = ["describe", "run_together", "take_batch"]

T = TypeVar("T")

#: how long a batch waits for more work to arrive, while it keeps arriving
_LINGER = 0.001
_LINGER_ROUNDS = 16


async def run_together(*tasks: Callable[[], Awaitable[None]]) -> None:
    """Run ``tasks`` concurrently; the first to fail cancels the others and its error is raised
    as it is (not wrapped in an exception group: callers report it to the peer)."""
    failures: list[Exception] = []

    async def guard(task: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        try:
            await task()
        except Exception as err:
            failures.append(err)
            scope.cancel()

    async with anyio.create_task_group() as group:
        for task in tasks:
            group.start_soon(guard, task, group.cancel_scope)
    if failures:
        raise failures[0]


async def take_batch(
    queue: MemoryObjectReceiveStream[T],
    first: T,
    *,
    limit: int,
    weight: Callable[[T], int] = lambda _: 1,
) -> list[T]:
    """``first`` and what else is queued, up to ``limit`` (by ``weight``), for one worker-thread
    call. Work trickles in a packet at a time, so a short wait while more keeps coming turns a
    thread hop per file into one per batch; the wait sleeps rather than cancels a receive, so
    no item is ever lost."""
    batch = [first]
    total = weight(first)
    for round_ in range(_LINGER_ROUNDS):
        grew = False
        while total < limit:
            try:
                item = queue.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            batch.append(item)
            total += weight(item)
            grew = True
        if total >= limit or (round_ and not grew):
            break
        await anyio.sleep(_LINGER)
    return batch
