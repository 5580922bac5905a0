"""Every recorded differential case (tests/differential/vectors/, recorded from BuildKit
v0.11.6 by scripts/record_differential.py) built by llbkit embedded: the same changed tree,
image config and history, or the same error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.errors import UserError
from llbkit.sdk.testing.builds import build_in
from tests.differential.harness import (
    Case,
    agent_sockets,
    busybox_tree,
    compare,
    error_cause,
    input_definitions,
    load_vectors,
    materialize,
    opts,
    push_images,
    result_of,
    serve_remote,
    shared_dirs,
)
from tests.differential.known import DELIBERATE, KNOWN

VECTORS = load_vectors()

pytestmark = [pytest.mark.root, pytest.mark.services]


def _param(case: Case, result: dict[str, Any]) -> Any:
    marks = [pytest.mark.xfail(reason=KNOWN[case.name], strict=True)] if case.name in KNOWN else []
    return pytest.param(case, result, id=case.name, marks=marks)


@pytest.fixture(scope="session")
def registry(busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = busybox_image.split("/", 1)[0]
    push_images(host)
    with serve_remote(tmp_path_factory.mktemp("remote")):
        yield host


@pytest.fixture(scope="session")
def base_tree() -> dict[str, Any]:
    return busybox_tree()


def build(case: Case, registry: str, base: dict[str, Any], tmp: Path) -> dict[str, Any] | str:
    """What llbkit builds from ``case``: its result as recorded, or its error's cause."""
    ctx, dfdir = materialize(case, tmp, registry)
    locals_, layouts = shared_dirs(case, tmp, registry)
    out = tmp / "out.tar"
    config = EngineConfig(insecure_entitlements=list(case.allow))
    try:
        with agent_sockets(case) as agents:
            client = EmbeddedClient(
                locals={"context": ctx, "dockerfile": dfdir, **locals_},
                layouts=layouts,
                secrets={sid: content.encode() for sid, content in case.secrets.items()},
                ssh=agents,
            )
            build_in(
                tmp / "root",
                client,
                config,
                entitlements=case.allow,
                frontend="dockerfile.v0",
                frontend_opts=opts(case, registry),
                exports=[("oci", {"dest": str(out)})],
                frontend_inputs=input_definitions(case, registry),
            )
    except UserError as err:
        return error_cause(str(err).splitlines()[0], registry)
    return result_of(out.read_bytes(), base, registry)


@pytest.mark.parametrize(("case", "expected"), [_param(c, r) for c, r in VECTORS])
def test_same_as_buildkit(  # noqa: PLR0917 (pytest passes fixtures by position)
    case: Case,
    expected: dict[str, Any],
    registry: str,
    base_tree: dict[str, Any],
    tmp_path: Path,
    record_property: Any,
) -> None:
    record_property("category", case.category)
    got = build(case, registry, base_tree, tmp_path)
    if case.name in DELIBERATE:  # llbkit's own answer, checked as BuildKit's would be
        record_property("deliberate", True)
        assert compare(expected, got), f"{case.name} is the same as BuildKit now: see known.py"
        if not DELIBERATE[case.name].error:  # built where BuildKit refuses
            assert not isinstance(got, str), f"{case.name}: llbkit failed: {got}"
            wanted = sorted(case.options.get("platform", "").split(","))
            if len(wanted) > 1:  # an image per platform, each saying which
                images = got.get("platforms", {})
                assert sorted(images) == wanted, f"{case.name}: {sorted(images)}"
                for key, one in images.items():
                    assert f"{one['image']['os']}/{one['image']['architecture']}" == key
            return
        expected = {"error": DELIBERATE[case.name].error}
    problems = compare(expected, got)
    assert not problems, f"{case.name} differs from BuildKit:\n" + "\n".join(problems)


def test_enough_cases() -> None:
    """The corpus the issue asks for: hundreds of Dockerfiles, dozens that BuildKit refuses."""
    assert len(VECTORS) >= 300
    assert sum("error" in r for _, r in VECTORS) >= 40
