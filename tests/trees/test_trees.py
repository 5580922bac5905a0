"""llbkit builds the same trees as BuildKit v0.11.6 from the same file/merge/diff LLB."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from llbkit.core.cache.store import Store
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.engine import Engine, ExportRequest
from llbkit.core.errors import UserError
from llbkit.core.plugins.registry import PluginRegistry
from tests.trees.cases import CASES, definition
from tests.trees.context import make_context
from tests.trees.exec_cases import EXEC_CASES, exec_definition
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
    engine = Engine(
        Store.open(tmp_path / "root", layer_format=layer_format),
        EngineConfig(),
        PluginRegistry.from_env(),
    )
    out = tmp_path / "out.tar"
    client = EmbeddedClient(locals={"context": context})
    try:
        anyio.run(
            lambda: engine.build(
                definition(name), client, exports=[ExportRequest("tar", {"dest": str(out)})]
            )
        )
    except UserError as err:
        assert "error" in expected, f"BuildKit built {name}, llbkit failed: {err}"
        return
    finally:
        engine.close()
    assert "error" not in expected, f"BuildKit refused {name} ({expected.get('error')})"
    assert tar_listing(out.read_bytes()) == expected["tree"]


@pytest.mark.root
@pytest.mark.services
@pytest.mark.parametrize("name", sorted(EXEC_CASES))
def test_same_exec_tree_as_buildkit(name: str, busybox_image: str, tmp_path: Path) -> None:
    expected = json.loads((VECTORS / f"{name}.json").read_text())
    engine = Engine(Store.open(tmp_path / "root"), EngineConfig(), PluginRegistry.from_env())
    out = tmp_path / "out.tar"
    try:
        anyio.run(
            lambda: engine.build(
                exec_definition(name, busybox_image),
                EmbeddedClient(),
                exports=[ExportRequest("tar", {"dest": str(out)})],
            )
        )
    finally:
        engine.close()
    assert tar_listing(out.read_bytes()) == expected["tree"]
