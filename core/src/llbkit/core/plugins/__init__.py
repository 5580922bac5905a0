"""Plugin contracts and discovery: what a plugin implements, and how core finds it.

One contract per module (:mod:`.exporter`, :mod:`.frontend`, :mod:`.worker`,
:mod:`.cache_backend`, :mod:`.source`), the hooks in :mod:`.hookspecs`, and the loader in
:mod:`.registry`. Importing this package imports no plugin.
"""

from typing import TYPE_CHECKING

from llbkit.core.plugins.cache_backend import CacheBackend, CacheStore
from llbkit.core.plugins.context import (
    BuildResult,
    ByteSink,
    ClientIO,
    Platform,
    PluginContext,
    ProgressEvent,
    ProgressSink,
    Result,
)
from llbkit.core.plugins.exporter import Exporter, ExportJob
from llbkit.core.plugins.frontend import Frontend, FrontendClient, FrontendJob, FrontendOutput
from llbkit.core.plugins.hookspecs import hookimpl
from llbkit.core.plugins.source import Source, SourceJob
from llbkit.core.plugins.worker import Executor, MountSpec, ProcessSpec, Worker

GROUP_CACHE_BACKENDS = "llbkit.cache_backends"
GROUP_EXPORTERS = "llbkit.exporters"
GROUP_FRONTENDS = "llbkit.frontends"
GROUP_HOOKS = "llbkit.hooks"
GROUP_SOURCES = "llbkit.sources"
GROUP_WORKERS = "llbkit.workers"

if TYPE_CHECKING:
    from llbkit.core.plugins.registry import DRIVER_GROUPS, PluginInfo, PluginRegistry


def __getattr__(name: str) -> object:
    # The registry pulls in stevedore; load it only for the composition root that asks for it.
    if name in ("DRIVER_GROUPS", "PluginInfo", "PluginRegistry"):
        from llbkit.core.plugins import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DRIVER_GROUPS",
    "GROUP_CACHE_BACKENDS",
    "GROUP_EXPORTERS",
    "GROUP_FRONTENDS",
    "GROUP_HOOKS",
    "GROUP_SOURCES",
    "GROUP_WORKERS",
    "BuildResult",
    "ByteSink",
    "CacheBackend",
    "CacheStore",
    "ClientIO",
    "ExportJob",
    "Executor",
    "Exporter",
    "Frontend",
    "FrontendClient",
    "FrontendJob",
    "FrontendOutput",
    "MountSpec",
    "Platform",
    "PluginContext",
    "PluginInfo",
    "PluginRegistry",
    "ProcessSpec",
    "ProgressEvent",
    "ProgressSink",
    "Result",
    "Source",
    "SourceJob",
    "Worker",
    "hookimpl",
]
