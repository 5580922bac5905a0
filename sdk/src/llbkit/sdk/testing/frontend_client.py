"""The engine's own frontend client over a throwaway state root, for frontend tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from llbkit.core.plugins.context import Result
from llbkit.core.plugins.frontend import FrontendClient
from llbkit.sdk.testing._doubles import MemoryClientIO
from llbkit.sdk.testing.results import StrictResult

__all__ = ["kit_frontend_client"]


@asynccontextmanager
async def kit_frontend_client(
    work: Path, files: Mapping[str, Mapping[str, bytes]]
) -> AsyncIterator[FrontendClient]:
    """A frontend client as a build gets it: the client's directories hold ``files``
    (``{context: {path: bytes}}``); solves, results and image lookups are the engine's, and
    a solve's result has exactly the ``Result`` contract's members (:class:`StrictResult`)."""
    from llbkit.core.config import EngineConfig
    from llbkit.core.control import Controller
    from llbkit.core.control.frontend_client import EngineFrontendClient

    class StrictClient(EngineFrontendClient):
        async def solve(self, definition: bytes) -> Result:
            return StrictResult(await super().solve(definition))

    locals_ = {}
    for context, entries in files.items():
        base = work / "kit-client" / context
        for path, data in entries.items():
            target = base / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        base.mkdir(parents=True, exist_ok=True)
        locals_[context] = base
    controller = Controller.open(work / "kit-engine", EngineConfig(gc=False))
    lease = controller.store.lease("kit")
    try:
        with lease.bound():
            yield StrictClient(
                solver=controller.solver,
                session=MemoryClientIO(tree_root=work / "kit-out", locals=locals_),
                lease=lease,
                emit=lambda event: None,
                images=controller.drivers.image_resolver(),
                inputs={},
                allow=(),
                tmp=controller.store.tmp,
            )
    finally:
        lease.release()
        await controller.aclose()
