"""Running builds in-process for the engine tests."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.cache.store import Store
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.engine import BuildOutcome, Engine, ExportRequest
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.sdk import llb

PLATFORM = llb.Platform("linux", "amd64")


def open_engine(
    root: Path,
    *,
    registry: PluginRegistry | None = None,
    max_parallelism: int = 0,
    layer_format: str | None = None,
) -> Engine:
    config = EngineConfig(max_parallelism=max_parallelism, gc=False)
    return Engine(
        Store.open(root, layer_format=layer_format), config, registry or PluginRegistry.from_env()
    )


def build(
    engine: Engine,
    state: llb.State,
    *,
    locals: Mapping[str, Path] | None = None,
    exports: Sequence[ExportRequest] = (),
    no_cache: bool = False,
) -> BuildOutcome:
    client = EmbeddedClient(locals=dict(locals or {}))
    data = state.marshal(PLATFORM).to_bytes()
    return anyio.run(lambda: engine.build(data, client, exports=exports, no_cache=no_cache))


def files(engine: Engine, outcome: BuildOutcome) -> dict[str, str]:
    """The result's regular files and their text (directories as ``<dir>``)."""
    assert outcome.result is not None
    found: dict[str, str] = {}
    with engine.store.view(outcome.result.chain) as root:
        for top, dirs, names in os.walk(root):
            for name in dirs:
                found[os.path.relpath(os.path.join(top, name), root)] = "<dir>"
            for name in names:
                path = os.path.join(top, name)
                text = Path(path).read_bytes().decode("utf-8", "replace")
                found[os.path.relpath(path, root)] = text
    return found


def vertex_events(outcome: BuildOutcome) -> dict[str, dict[str, Any]]:
    """The last state of each vertex, by name."""
    found: dict[str, dict[str, Any]] = {}
    for event in outcome.events:
        if event.kind == "vertex":
            found.setdefault(event.data["name"], {}).update(
                {k: v for k, v in event.data.items() if v is not None}
            )
    return found


def ran(outcome: BuildOutcome) -> set[str]:
    """Names of the vertices that ran (not cached, not exports)."""
    return {
        name
        for name, data in vertex_events(outcome).items()
        if data.get("completed") and not data.get("cached") and not name.startswith("exporting")
    }


def cached(outcome: BuildOutcome) -> set[str]:
    return {name for name, data in vertex_events(outcome).items() if data.get("cached")}
