"""A pull says how far it got as BuildKit's ticker does: at most every 150 ms, not per piece."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator

import anyio

from llbkit.core.sources import image
from llbkit.core.sources.image import _write_blob


def _run(pauses: list[float]) -> tuple[list[int], bytes]:
    out = io.BytesIO()
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for pause in pauses:
            await anyio.sleep(pause)
            yield b"x" * 1000

    async def main() -> int:
        return await _write_blob(
            chunks(), out, hashlib.sha256(), None, lambda **k: seen.append(k["current"])
        )

    assert anyio.run(main) == 1000 * len(pauses)
    return seen, out.getvalue()


def test_a_quick_download_reports_nothing_on_its_way() -> None:
    seen, data = _run([0.0] * 50)
    assert seen == [] and data == b"x" * 50_000


def test_a_slow_download_reports_once_per_tick() -> None:
    seen, _ = _run([0.0, image.PROGRESS_EVERY + 0.05, 0.0, image.PROGRESS_EVERY + 0.05, 0.0])
    assert seen == [2000, 4000]
