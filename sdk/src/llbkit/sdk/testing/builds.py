"""Running whole builds in a test, through the Controller as every client does, with the
build's progress collected as a client reads it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from llbkit.core.plugins.context import ClientIO, Result
from llbkit.core.plugins.progress import ProgressEvent

__all__ = ["Outcome", "build_in", "run_build"]


@dataclass
class Outcome:
    """A finished build: its result (``None`` for scratch; valid while the store keeps it),
    the exporters' response, the frontend's metadata, and every progress record."""

    ref: str
    result: Result | None
    metadata: Mapping[str, str]
    frontend_metadata: Mapping[str, bytes] = field(default_factory=dict)
    events: list[ProgressEvent] = field(default_factory=list)

    @property
    def result_key(self) -> str | None:
        return None if self.result is None else self.result.key


async def run_build(
    controller: Any,
    client: ClientIO,
    *,
    definition: bytes | None = None,
    exports: Sequence[tuple[str, Mapping[str, str]]] = (),
    frontend: str = "",
    frontend_opts: Mapping[str, str] | None = None,
    no_cache: bool = False,
    frontend_inputs: Mapping[str, bytes] | None = None,
    entitlements: Sequence[str] = (),
) -> Outcome:
    """One build on ``controller`` (a :class:`llbkit.core.control.Controller`);
    ``frontend_inputs``: definitions the client passes the frontend by name;
    ``entitlements``: ``--allow`` (the engine's config must grant them)."""
    from llbkit.core.control import ExporterRequest, SolveRequest, new_ref
    from llbkit.core.errors import one_error

    request = SolveRequest(
        ref=new_ref(),
        session=client,
        definition=definition,
        frontend=frontend,
        frontend_attrs=dict(frontend_opts or {}),
        frontend_inputs=dict(frontend_inputs or {}),
        exporters=[ExporterRequest(kind, dict(attrs)) for kind, attrs in exports],
        entitlements=list(entitlements),
    )
    if no_cache:
        request = request.without_cache()
    events: list[ProgressEvent] = []

    async def watch() -> None:
        async for status in controller.status(request.ref):
            events.extend(status.events())

    with one_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with controller.build(request) as outcome:
                result = outcome.result.single
                found = Outcome(
                    request.ref,
                    result,
                    dict(outcome.exporter_response),
                    dict(outcome.result.metadata),
                    events,
                )
    return found


def build_in(root: Path, client: ClientIO, config: Any = None, **kw: Any) -> Outcome:
    """Open a Controller on ``root`` (``config``, an ``EngineConfig``, or the defaults;
    installed plugins), run one build (:func:`run_build`'s keywords), close it."""
    from llbkit.core.control import Controller

    with Controller.open(root, config) as controller:
        return anyio.run(lambda: run_build(controller, client, **kw))
