"""Calls to a remote cache, tried again while the backend says the failure is transient.

Every backend gets the same patience: a 5xx or a timeout that the backend raises as
:class:`TransientCacheError` is tried again after 0.2 s, then 0.4 s... up to 5 attempts; a
service that asks to slow down (``throttled``: a 429, S3's SlowDown, Azure's ServerBusy) is
waited for up to about a minute, as BuildKit's GitHub cache client waits out throttling. What
still fails is the build's failure (or, with ``ignore-error``, its warning), named by the last
error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from llbkit.core.plugins.cache_backend import TransientCacheError

__all__ = ["ATTEMPTS", "THROTTLE_PATIENCE", "retried"]

T = TypeVar("T")

ATTEMPTS = 5
#: seconds a throttled service is waited for, in all
THROTTLE_PATIENCE = 60.0
_FIRST_DELAY = 0.2
_MAX_DELAY = 3.0
_MAX_THROTTLE_DELAY = 10.0


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, again after a :class:`TransientCacheError`, with backoff."""
    delay = _FIRST_DELAY
    failures, waited = 0, 0.0
    while True:
        try:
            return await call()
        except TransientCacheError as err:
            if err.throttled:
                if waited >= THROTTLE_PATIENCE:
                    raise
                pause = min(delay * 2, _MAX_THROTTLE_DELAY)
            else:
                failures += 1
                if failures >= ATTEMPTS:
                    raise
                pause = min(delay * 2, _MAX_DELAY)
        await anyio.sleep(delay)
        waited += delay
        delay = pause
