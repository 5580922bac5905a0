"""Stopping the engine stops every worker it started, even when one of them fails to stop."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.config import EngineConfig
from llbkit.core.drivers import Drivers
from llbkit.core.errors import UserError
from llbkit.core.plugins.registry import PluginRegistry


class _Executor:
    def __init__(self, name: str, closed: list[str], fails: bool = False) -> None:
        self.name, self.closed, self.fails = name, closed, fails

    async def aclose(self) -> None:
        self.closed.append(self.name)
        if self.fails:
            raise UserError(f"{self.name}: containerd went away")


def test_every_worker_is_stopped_and_the_first_failure_told(tmp_path: Path) -> None:
    drivers = Drivers(PluginRegistry(), EngineConfig(), tmp_path)
    closed: list[str] = []
    drivers._others = {
        "containerd": _Executor("containerd", closed, fails=True),  # type: ignore[dict-item]
        "other": _Executor("other", closed),  # type: ignore[dict-item]
    }
    drivers._executor = _Executor("oci", closed)  # type: ignore[assignment]
    with pytest.raises(UserError, match="containerd went away"):
        anyio.run(drivers.aclose)
    assert closed == ["containerd", "other", "oci"]
    closed.clear()
    anyio.run(drivers.aclose)  # stopped once: nothing is stopped twice
    assert closed == []
