"""The control layer: the Controller every client talks to, and the typed requests and answers
it takes and gives (the Python shape of BuildKit's ``Control`` service). See
``docs/python-api.md`` for building from Python with it: everything a program needs for that
is importable from here.

Names load on first use (PEP 562): a client of a daemon imports the typed requests without
the engine behind them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any

    from llbkit.core.cache.usage import UsageRecord
    from llbkit.core.client.embedded import EmbeddedClient
    from llbkit.core.config import EngineConfig, load_config
    from llbkit.core.control.build import BuildOutcome
    from llbkit.core.control.controller import BuildHistoryRecord, Controller, Info, WorkerRecord
    from llbkit.core.control.request import (
        CacheOptionsEntry,
        ExporterRequest,
        PruneRequest,
        SolveRequest,
        SolveResponse,
        new_ref,
    )
    from llbkit.core.errors import (
        BuildFailed,
        ConfigError,
        FrontendFailed,
        UnknownOptionError,
        UnknownPluginError,
        UserError,
        one_error,
    )
    from llbkit.core.plugins.context import LayerOptions
    from llbkit.core.plugins.progress import (
        SolveStatus,
        Vertex,
        VertexLog,
        VertexStatus,
        VertexWarning,
    )

_WHERE = {
    "BuildFailed": "llbkit.core.errors",
    "BuildHistoryRecord": "llbkit.core.control.controller",
    "BuildOutcome": "llbkit.core.control.build",
    "CacheOptionsEntry": "llbkit.core.control.request",
    "ConfigError": "llbkit.core.errors",
    "Controller": "llbkit.core.control.controller",
    "EmbeddedClient": "llbkit.core.client.embedded",
    "EngineConfig": "llbkit.core.config",
    "ExporterRequest": "llbkit.core.control.request",
    "FrontendFailed": "llbkit.core.errors",
    "Info": "llbkit.core.control.controller",
    "LayerOptions": "llbkit.core.plugins.context",
    "PruneRequest": "llbkit.core.control.request",
    "SolveRequest": "llbkit.core.control.request",
    "SolveResponse": "llbkit.core.control.request",
    "SolveStatus": "llbkit.core.plugins.progress",
    "UnknownOptionError": "llbkit.core.errors",
    "UnknownPluginError": "llbkit.core.errors",
    "UsageRecord": "llbkit.core.cache.usage",
    "UserError": "llbkit.core.errors",
    "Vertex": "llbkit.core.plugins.progress",
    "VertexLog": "llbkit.core.plugins.progress",
    "VertexStatus": "llbkit.core.plugins.progress",
    "VertexWarning": "llbkit.core.plugins.progress",
    "WorkerRecord": "llbkit.core.control.controller",
    "load_config": "llbkit.core.config",
    "new_ref": "llbkit.core.control.request",
    "one_error": "llbkit.core.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # here: a client that only makes a ref (buildref) need not load it

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "BuildFailed",
    "BuildHistoryRecord",
    "BuildOutcome",
    "CacheOptionsEntry",
    "ConfigError",
    "Controller",
    "EmbeddedClient",
    "EngineConfig",
    "ExporterRequest",
    "FrontendFailed",
    "Info",
    "LayerOptions",
    "PruneRequest",
    "SolveRequest",
    "SolveResponse",
    "SolveStatus",
    "UnknownOptionError",
    "UnknownPluginError",
    "UsageRecord",
    "UserError",
    "Vertex",
    "VertexLog",
    "VertexStatus",
    "VertexWarning",
    "WorkerRecord",
    "load_config",
    "new_ref",
    "one_error",
]
