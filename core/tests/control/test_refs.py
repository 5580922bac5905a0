"""Build refs as the Controller takes them: chosen by the caller, used once, plain names."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller, SolveRequest, new_ref
from llbkit.core.errors import UserError
from llbkit.sdk import llb

DEFINITION = llb.scratch().file(llb.mkfile("/a", 0o644, b"a\n")).marshal().to_bytes()


def _request(ref: str) -> SolveRequest:
    return SolveRequest(ref=ref, session=EmbeddedClient(), definition=DEFINITION)


def test_the_ref_of_a_finished_build_is_not_reused(tmp_path: Path) -> None:
    ref = new_ref()

    async def main(controller: Controller) -> list[int]:
        await controller.solve(_request(ref))
        with pytest.raises(UserError, match="already running or done"):
            await controller.solve(_request(ref))
        return [len(b.vertexes) async for b in controller.status(ref)]

    with Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller:
        assert sum(anyio.run(main, controller)) > 0  # the first build's journal is intact
        history = anyio.run(controller.history)
        assert [r.ref for r in history] == [ref]
        assert history[0].error == ""


@pytest.mark.parametrize("ref", ["", "../escape", "a/b", ".hidden"])
def test_a_ref_must_be_a_plain_name(tmp_path: Path, ref: str) -> None:
    with Controller.open(tmp_path / "state", EngineConfig(gc=False)) as controller:
        with pytest.raises(UserError, match="invalid build ref"):
            anyio.run(controller.solve, _request(ref))
        with pytest.raises(UserError, match="invalid build ref"):
            controller.status(ref)
        if ref:
            with pytest.raises(UserError, match="invalid build ref"):
                anyio.run(lambda: controller.history(ref=ref))
    assert not list(tmp_path.rglob("escape*"))  # nothing written outside history/
