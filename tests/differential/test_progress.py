"""A warm rebuild's plain progress, as buildctl v0.11.6 showed it for every recorded
multi-stage case (tests/differential/vectors/progress/, scripts/record_differential.py
--progress): the same steps, names and CACHED/DONE markers, in the same order within each
stage (see docs/compatibility.md for how parallel stages are compared)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.cli.progress_ui import PlainDisplay
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.sdk.testing.builds import run_build
from tests.differential.harness import (
    Case,
    compare_progress,
    input_definitions,
    load_progress,
    load_vectors,
    materialize,
    opts,
    progress_steps,
    push_images,
    serve_remote,
    shared_dirs,
)

RECORDED = load_progress()
CASES = [c for c, _ in load_vectors() if c.name in RECORDED]

pytestmark = [pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def registry(busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = busybox_image.split("/", 1)[0]
    push_images(host)
    with serve_remote(tmp_path_factory.mktemp("remote")):
        yield host


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One engine for every case, as one buildkitd served the recording."""
    from llbkit.core.control import Controller

    with Controller.open(tmp_path_factory.mktemp("progress") / "root") as opened:
        yield opened


def rebuild_steps(controller: Any, case: Case, registry: str, tmp: Path) -> list[list[str]]:
    """The steps llbkit's plain progress shows when it builds ``case`` a second time."""
    ctx, dfdir = materialize(case, tmp, registry)
    locals_, layouts = shared_dirs(case, tmp, registry)
    client = EmbeddedClient(
        locals={"context": ctx, "dockerfile": dfdir, **locals_}, layouts=layouts
    )
    text = io.StringIO()

    async def build() -> Any:
        return await run_build(
            controller,
            client,
            frontend="dockerfile.v0",
            frontend_opts=opts(case, registry),
            exports=[("oci", {"dest": str(tmp / "out.tar")})],
            frontend_inputs=input_definitions(case, registry),
        )

    anyio.run(build)
    outcome = anyio.run(build)
    display = PlainDisplay(text)
    for event in outcome.events:
        display.show(event)
    display.close()
    return progress_steps(text.getvalue(), registry)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_warm_rebuild_shows_the_same_steps(
    case: Case, registry: str, controller: Any, tmp_path: Path, record_property: Any
) -> None:
    record_property("category", "progress")
    problems = compare_progress(
        RECORDED[case.name], rebuild_steps(controller, case, registry, tmp_path)
    )
    assert not problems, f"{case.name}: warm rebuild's progress differs:\n" + "\n".join(problems)


def test_enough_progress_cases() -> None:
    assert len(CASES) >= 20
