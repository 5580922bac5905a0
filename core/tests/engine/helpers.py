"""Running builds in-process for the engine tests, through the Controller as every client does."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.cache.refs import ResultRef
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller, ExporterRequest
from llbkit.core.plugins.context import ClientIO
from llbkit.core.plugins.progress import Vertex, VertexLog
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.sdk import llb
from llbkit.sdk.testing.builds import Outcome, run_build

PLATFORM = llb.Platform("linux", "amd64")


def open_engine(
    root: Path,
    *,
    registry: PluginRegistry | None = None,
    max_parallelism: int = 0,
    layer_format: str | None = None,
    config: EngineConfig | None = None,
) -> Controller:
    config = config or EngineConfig(max_parallelism=max_parallelism, gc=False)
    return Controller.open(
        root, config, registry or PluginRegistry.from_env(), layer_format=layer_format
    )


async def build_async(
    engine: Controller,
    data: bytes | None,
    client: ClientIO,
    *,
    exports: Sequence[ExporterRequest] = (),
    no_cache: bool = False,
    frontend: str = "",
    frontend_opts: Mapping[str, str] | None = None,
) -> Outcome:
    """One build, its status read as a client reads it."""
    return await run_build(
        engine,
        client,
        definition=data,
        exports=[(e.type, e.attrs) for e in exports],
        frontend=frontend,
        frontend_opts=frontend_opts,
        no_cache=no_cache,
    )


def build(
    engine: Controller,
    state: llb.State,
    *,
    locals: Mapping[str, Path] | None = None,
    exports: Sequence[ExporterRequest] = (),
    no_cache: bool = False,
) -> Outcome:
    client = EmbeddedClient(locals=dict(locals or {}))
    data = state.marshal(PLATFORM).to_bytes()
    return anyio.run(lambda: build_async(engine, data, client, exports=exports, no_cache=no_cache))


def build_data(engine: Controller, data: bytes, client: ClientIO, **kw: Any) -> Outcome:
    return anyio.run(lambda: build_async(engine, data, client, **kw))


def files(engine: Controller, outcome: Outcome) -> dict[str, str]:
    """The result's regular files and their text (directories as ``<dir>``)."""
    assert outcome.result is not None
    found: dict[str, str] = {}
    assert isinstance(outcome.result, ResultRef)
    with engine.store.view(outcome.result.chain) as root:
        for top, dirs, names in os.walk(root):
            for name in dirs:
                found[os.path.relpath(os.path.join(top, name), root)] = "<dir>"
            for name in names:
                path = os.path.join(top, name)
                text = Path(path).read_bytes().decode("utf-8", "replace")
                found[os.path.relpath(path, root)] = text
    return found


def vertex_events(outcome: Outcome) -> dict[str, dict[str, Any]]:
    """The last state of each vertex, by name."""
    found: dict[str, dict[str, Any]] = {}
    for event in outcome.events:
        if isinstance(event, Vertex):
            state = {
                "name": event.name,
                "started": event.started,
                "completed": event.completed,
                "cached": event.cached,
                "error": event.error,
            }
            found.setdefault(event.name, {}).update(
                {k: v for k, v in state.items() if v not in (None, "", False)}
            )
    return found


def logs(outcome: Outcome) -> list[tuple[int, str]]:
    """Every log chunk of the build: (stream, text)."""
    return [
        (e.stream, e.data.decode("utf-8", "replace"))
        for e in outcome.events
        if isinstance(e, VertexLog)
    ]


def ran(outcome: Outcome) -> set[str]:
    """Names of the vertices that ran (not cached, not exports)."""
    return {
        name
        for name, data in vertex_events(outcome).items()
        if data.get("completed") and not data.get("cached") and not name.startswith("exporting")
    }


def cached(outcome: Outcome) -> set[str]:
    return {name for name, data in vertex_events(outcome).items() if data.get("cached")}
