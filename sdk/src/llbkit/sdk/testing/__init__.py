"""Test doubles and conformance kits for llbkit plugins.

A plugin's own tests subclass the kit for its contract and say how to build the plugin; the kit's
test methods then check what every plugin of that kind must get right (its declared contract
version, refusing unknown options by name, the job lifecycle, round trips). Opt in from a
``conftest.py`` or test module; nothing here registers itself with pytest.

    from llbkit.sdk.testing import ExporterKit

    class TestTarExporter(ExporterKit):
        exporter_class = TarExporter
        valid_attrs = {"dest": "out.tar"}
"""

from llbkit.sdk.testing._doubles import (
    MemoryCacheStore,
    MemoryClientIO,
    RecordingProgress,
    make_context,
)
from llbkit.sdk.testing.azurite import Azurite
from llbkit.sdk.testing.doubles import (
    MemoryCacheBackend,
    ScriptedExecutor,
    ScriptedWorker,
    StaticFrontend,
)
from llbkit.sdk.testing.fault_kit import CacheFaultKit
from llbkit.sdk.testing.faults import Fault, FaultProxy
from llbkit.sdk.testing.frontend_client import kit_frontend_client
from llbkit.sdk.testing.gha_cache import GhaCacheService, make_gha_token
from llbkit.sdk.testing.http_store import HttpStore
from llbkit.sdk.testing.kit_worker import busybox_rootfs
from llbkit.sdk.testing.kits import (
    CacheBackendKit,
    ExporterKit,
    FrontendKit,
    SourceKit,
    WorkerKit,
)
from llbkit.sdk.testing.results import StrictResult, layered_result

__all__ = [
    "Azurite",
    "CacheBackendKit",
    "CacheFaultKit",
    "ExporterKit",
    "Fault",
    "FaultProxy",
    "FrontendKit",
    "GhaCacheService",
    "HttpStore",
    "MemoryCacheBackend",
    "MemoryCacheStore",
    "MemoryClientIO",
    "RecordingProgress",
    "ScriptedExecutor",
    "ScriptedWorker",
    "SourceKit",
    "StaticFrontend",
    "StrictResult",
    "WorkerKit",
    "busybox_rootfs",
    "kit_frontend_client",
    "layered_result",
    "make_gha_token",
    "make_context",
]
