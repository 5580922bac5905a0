"""A computation run once however many tasks ask for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

__all__ = ["Flight"]

T = TypeVar("T")


class Flight(Generic[T]):
    """Run once, shared by every asker; if its runner is cancelled, the next asker takes over
    instead of inheriting the cancellation."""

    def __init__(self) -> None:
        self._done: anyio.Event | None = None
        self._finished = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def set(self, value: T) -> None:
        """Finish with ``value`` without running anything (a cache hit)."""
        self._done = anyio.Event()
        self._done.set()
        self._finished = True
        self._value = value

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def ok(self) -> bool:
        """Finished with a value (not an error)."""
        return self._finished and self._error is None

    @property
    def value(self) -> T:
        """The value of a flight that finished successfully."""
        if not self._finished or self._error is not None:
            raise RuntimeError("the flight has no value")
        return self._value  # type: ignore[return-value]

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        while True:
            if self._done is None:
                done = self._done = anyio.Event()
                try:
                    value = await fn()
                except anyio.get_cancelled_exc_class():
                    self._done = None
                    done.set()
                    raise
                except BaseException as err:
                    self._error = err
                    self._finished = True
                    done.set()
                    raise
                self._value = value
                self._finished = True
                done.set()
                return value
            done = self._done
            await done.wait()
            if self._done is None:
                continue
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[return-value]
