"""The control layer: the Controller every client talks to, and the typed requests and answers
it takes and gives (the Python shape of BuildKit's ``Control`` service). See
``docs/python-api.md`` for building from Python with it: everything a program needs for that
is importable from here."""

from llbkit.core.cache.usage import UsageRecord
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig, load_config
from llbkit.core.control.build import BuildOutcome, FrontendFailed
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
    ConfigError,
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
from llbkit.core.solver.solver import BuildFailed

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
