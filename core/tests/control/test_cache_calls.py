"""How long a remote cache is given: a failure five tries, a service asking to slow down about a
minute (BuildKit's GitHub cache client waits out throttling too)."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from llbkit.core.control import cache_calls
from llbkit.core.control.cache_calls import ATTEMPTS, THROTTLE_PATIENCE, retried
from llbkit.core.plugins.cache_backend import TransientCacheError


def _run(
    monkeypatch: pytest.MonkeyPatch, *, throttled: bool, succeed_after: int
) -> tuple[int, float]:
    slept: list[float] = []
    calls = 0

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls <= succeed_after:
            raise TransientCacheError("HTTP 503", throttled=throttled)
        return "ok"

    monkeypatch.setattr(cache_calls.anyio, "sleep", fake_sleep)
    with contextlib.suppress(TransientCacheError):
        anyio.run(retried, call)
    return calls, sum(slept)


def test_a_failing_service_is_tried_five_times(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, waited = _run(monkeypatch, throttled=False, succeed_after=100)
    assert calls == ATTEMPTS and waited < 10
    assert _run(monkeypatch, throttled=False, succeed_after=3)[0] == 4  # then it worked


def test_a_throttling_service_is_waited_out_for_about_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, waited = _run(monkeypatch, throttled=True, succeed_after=100)
    assert calls > ATTEMPTS
    assert THROTTLE_PATIENCE <= waited < THROTTLE_PATIENCE + 15
    assert _run(monkeypatch, throttled=True, succeed_after=8)[0] == 9
