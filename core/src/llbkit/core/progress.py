"""Delivering progress events to ``llbkit_on_progress`` observers without slowing a build.

The build side calls a synchronous ``emit`` that never blocks; one consumer task drains the
stream and calls the hook, so observers see every event in order and a slow or failing observer
costs the build nothing.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import pluggy

    from llbkit.core.plugins.context import ProgressEvent

__all__ = ["Emit", "progress_bus"]

Emit = Callable[["ProgressEvent"], None]


@asynccontextmanager
async def progress_bus(
    pm: pluggy.PluginManager, on_error: Callable[[str], None] | None = None
) -> AsyncIterator[Emit]:
    """Yield ``emit(event)``; on exit, wait until observers have seen every event.

    :param on_error: told about each observer failure (one line naming the plugin); the
        failure is otherwise ignored, because an observer cannot fail a build.
    """
    send, receive = anyio.create_memory_object_stream["ProgressEvent"](math.inf)
    hook = pm.hook.llbkit_on_progress

    async def consume() -> None:
        async with receive:
            async for event in receive:
                for impl in reversed(hook.get_hookimpls()):
                    try:
                        impl.function(event=event)
                    # Third-party observer code may raise anything; report it, keep building.
                    except Exception as err:
                        if on_error is not None:
                            on_error(
                                f"progress observer {impl.plugin_name!r} failed: "
                                f"{type(err).__name__}: {err}"
                            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        try:
            yield send.send_nowait
        finally:
            send.close()
