"""llbkit builds the same trees as BuildKit v0.11.6 from the same file/merge/diff LLB."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller
from llbkit.core.errors import UserError
from llbkit.sdk.testing.builds import run_build
from llbkit.sdk.testing.containerd import containerd  # noqa: F401 - a fixture, used by name
from tests.trees.cases import CASES, definition
from tests.trees.context import make_context
from tests.trees.exec_cases import ENTITLEMENTS, EXEC_CASES, exec_definition
from tests.trees.listing import tar_listing

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "trees"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_context(tmp_path_factory.mktemp("ctx"))


@pytest.mark.root
@pytest.mark.parametrize("layer_format", ["overlay", "oci"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_tree_as_buildkit(name: str, layer_format: str, context: Path, tmp_path: Path) -> None:
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    out = tmp_path / "out.tar"
    client = EmbeddedClient(locals={"context": context})
    try:
        with Controller.open(tmp_path / "root", layer_format=layer_format) as engine:
            anyio.run(
                lambda: run_build(
                    engine,
                    client,
                    definition=definition(name),
                    exports=[("tar", {"dest": str(out)})],
                )
            )
    except UserError as err:
        assert "error" in expected, f"BuildKit built {name}, llbkit failed: {err}"
        return
    assert "error" not in expected, f"BuildKit refused {name} ({expected.get('error')})"
    assert tar_listing(out.read_bytes()) == expected["tree"]


@pytest.mark.root
@pytest.mark.services
@pytest.mark.parametrize("worker", ["oci", "containerd"])
@pytest.mark.parametrize("name", sorted(EXEC_CASES))
def test_same_exec_tree_as_buildkit(
    name: str, worker: str, busybox_image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each exec case, run by each worker, leaves BuildKit's tree."""
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    out = tmp_path / "out.tar"
    allow = ENTITLEMENTS.get(name, [])
    config = EngineConfig(insecure_entitlements=allow)
    if worker == "containerd":
        server = request.getfixturevalue("containerd")
        config = EngineConfig(
            worker_name="containerd",
            worker={"address": server.address, "namespace": server.namespace},
            insecure_entitlements=allow,
        )
    with Controller.open(tmp_path / "root", config) as engine:
        anyio.run(
            lambda: run_build(
                engine,
                EmbeddedClient(),
                definition=exec_definition(name, busybox_image),
                exports=[("tar", {"dest": str(out)})],
                entitlements=allow,
            )
        )
    assert tar_listing(out.read_bytes()) == expected["tree"]
