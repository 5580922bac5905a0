"""What a build will import next is imported while it waits on the network, and the wait's
answer and errors are the ones it would have had."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from llbkit.core import ahead
from llbkit.core.ahead import meanwhile, want

_NAMES = ("ahead_next", "ahead_broken", "ahead_log", "ahead_wanted")


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[list[str]]:
    """Modules that say, in ``ahead_log.LOG``, when they were imported."""
    (tmp_path / "ahead_log.py").write_text("LOG = []\n")
    (tmp_path / "ahead_next.py").write_text("import ahead_log\nahead_log.LOG.append('next')\n")
    (tmp_path / "ahead_wanted.py").write_text("import ahead_log\nahead_log.LOG.append('wanted')\n")
    (tmp_path / "ahead_broken.py").write_text("raise RuntimeError('not this one')\n")
    sys.path.insert(0, str(tmp_path))
    wanted = dict(ahead._WANTED)
    import ahead_log

    try:
        yield ahead_log.LOG
    finally:
        ahead._WANTED.clear()
        ahead._WANTED.update(wanted)
        sys.path.remove(str(tmp_path))
        for name in _NAMES:
            sys.modules.pop(name, None)


def test_the_modules_are_imported_while_the_answer_has_not_come(modules: list[str]) -> None:
    async def ask() -> str:
        await anyio.sleep(0.05)  # the registry thinking
        modules.append("answer")
        return "manifest"

    async def main() -> str:
        return await meanwhile(ask, ["ahead_broken", "ahead_next"])

    assert anyio.run(main) == "manifest"
    # the broken one is left to fail where it is needed; the next one came before the answer
    assert modules == ["next", "answer"]
    assert "ahead_broken" not in sys.modules


def test_an_answer_at_hand_imports_nothing(modules: list[str]) -> None:
    async def ask() -> str:
        return "at once"

    assert anyio.run(meanwhile, ask, ["ahead_next"]) == "at once"
    assert modules == []
    assert "ahead_next" not in sys.modules


def test_the_waits_error_is_its_own(modules: list[str]) -> None:
    class Refused(Exception):
        pass

    async def ask() -> str:
        await anyio.sleep(0.01)
        raise Refused("401")

    with pytest.raises(Refused, match="401"):
        anyio.run(meanwhile, ask, ["ahead_next"])


def test_a_cancelled_build_cancels_the_wait(modules: list[str]) -> None:
    asked = anyio.Event()
    ended: list[str] = []

    async def ask() -> str:
        asked.set()
        try:
            await anyio.sleep(10)
        finally:
            ended.append("cancelled")
        return "never"

    async def main() -> None:
        with anyio.move_on_after(0.05):
            await meanwhile(ask, ["ahead_next"])

    anyio.run(main)
    assert ended == ["cancelled"]


def test_what_a_component_wants_is_imported_at_the_next_wait_after_its_own(
    modules: list[str],
) -> None:
    want("ahead_wanted")

    async def ask() -> str:
        await anyio.sleep(0.05)
        modules.append("answer")
        return "manifest"

    assert "ahead_wanted" not in sys.modules  # asking is not importing
    assert anyio.run(meanwhile, ask, ["ahead_next"]) == "manifest"
    assert modules == ["next", "wanted", "answer"]
