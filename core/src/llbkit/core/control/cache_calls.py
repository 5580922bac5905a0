"""Calls to a remote cache, tried again while the backend says the failure is transient.

Every backend gets the same patience (BuildKit's differs per backend): a 5xx, a 429 or a
timeout that the backend raises as :class:`TransientCacheError` is tried again after 0.2 s,
then 0.4 s... up to 5 attempts; what still fails is the build's failure (or, with
``ignore-error``, its warning), named by the last error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from llbkit.core.plugins.cache_backend import TransientCacheError

__all__ = ["ATTEMPTS", "retried"]

T = TypeVar("T")

ATTEMPTS = 5
_FIRST_DELAY = 0.2
_MAX_DELAY = 3.0


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, again after a :class:`TransientCacheError`, with backoff."""
    delay = _FIRST_DELAY
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except TransientCacheError:
            if attempt == ATTEMPTS:
                raise
        await anyio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)
    raise AssertionError("unreachable")
