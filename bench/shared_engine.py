"""Several Dockerfile builds at once in one embedded engine, through the Python API.

    python bench/shared_engine.py ROOT 'CONTEXT|KEY=VALUE,KEY=VALUE' ...

A state root has one owner, so concurrent builds share a Controller (and with it every vertex
they have in common) rather than racing for the root; this is what a Python program that
drives llbkit without a daemon does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.control import Controller, SolveRequest, new_ref


async def _build(controller: Controller, spec: str) -> None:
    context, _, args = spec.partition("|")
    opts = {f"build-arg:{k}": v for k, _, v in (a.partition("=") for a in args.split(",") if a)}
    client = EmbeddedClient(locals={"context": Path(context), "dockerfile": Path(context)})
    request = SolveRequest(
        ref=new_ref(), session=client, frontend="dockerfile.v0", frontend_attrs=opts
    )
    await controller.solve(request)


async def _main(root: Path, specs: list[str]) -> None:
    with Controller.open(root) as controller:
        async with anyio.create_task_group() as group:
            for spec in specs:
                group.start_soon(_build, controller, spec)


if __name__ == "__main__":
    anyio.run(_main, Path(sys.argv[1]), sys.argv[2:])
