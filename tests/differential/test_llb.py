"""The LLB llbkit's Dockerfile frontend makes of every recorded case whose inputs are the
client's two directories, against what BuildKit v0.11.6's own frontend made of it
(tests/differential/vectors/llb/, scripts/record_differential.py --llb): the same ops, their
inputs by index, each platform's definition (see harness.normalize_llb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.plugins.frontend_dockerfile.frontend import DockerfileFrontend
from llbkit.sdk.testing import make_context
from llbkit.sdk.testing.frontend_client import kit_frontend_client
from tests.differential.harness import (
    Case,
    load_llb,
    load_vectors,
    materialize,
    normalize_llb,
    opts,
    push_images,
)
from tests.differential.known import DELIBERATE

RECORDED = load_llb()
#: not the cases llbkit refuses on purpose (known.py): their LLB is BuildKit's alone
CASES = [
    c
    for c, _ in load_vectors()
    if c.name in RECORDED and not (c.name in DELIBERATE and DELIBERATE[c.name].error)
]

pytestmark = [pytest.mark.services]


@pytest.fixture(scope="module")
def registry(busybox_image: str) -> str:
    host = busybox_image.split("/", 1)[0]
    push_images(host)
    return host


def frontend_llb(case: Case, registry: str, tmp: Path) -> list[list[str]]:
    """The definitions llbkit's frontend returns for ``case``, normalized."""
    return sorted(normalize_llb(d, registry) for d in frontend_definitions(case, registry, tmp))


def frontend_definitions(case: Case, registry: str, tmp: Path) -> list[bytes]:
    """The definitions llbkit's frontend returns for ``case``, as it returns them."""
    ctx, dfdir = materialize(case, tmp, registry)
    files = {
        name: {
            str(p.relative_to(folder)): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink()
        }
        for name, folder in (("context", ctx), ("dockerfile", dfdir))
    }

    async def solve() -> Any:
        async with kit_frontend_client(tmp / "kit", files) as client:
            job = await DockerfileFrontend(make_context("dockerfile.v0")).resolve(
                opts(case, registry)
            )
            return await job.solve(client)

    return list(anyio.run(solve).definitions.values())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_same_llb_as_buildkits_frontend(
    case: Case, registry: str, tmp_path: Path, record_property: Any
) -> None:
    record_property("category", "llb")
    expected = RECORDED[case.name]
    got = frontend_llb(case, registry, tmp_path)
    if got == expected:
        return
    want = {op for d in expected for op in d}
    have = {op for d in got for op in d}
    lines = [f"BuildKit only: {op}" for op in sorted(want - have)[:3]]
    lines += [f"llbkit only: {op}" for op in sorted(have - want)[:3]]
    assert not lines and len(got) == len(expected), f"{case.name}:\n" + "\n".join(lines)


def test_enough_llb_cases() -> None:
    assert len(CASES) >= 600
