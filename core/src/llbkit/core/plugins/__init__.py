"""Plugin contracts and discovery: what a plugin implements, and how core finds it.

One contract per module (:mod:`.exporter`, :mod:`.frontend`, :mod:`.worker`,
:mod:`.cache_backend`, :mod:`.source`), the vocabulary they share in :mod:`.context`,
:mod:`.progress` and :mod:`.registries`, the hooks in :mod:`.hookspecs`, and the loader in
:mod:`.registry`. Importing this package imports no plugin. Every contract is at version 2
(``docs/plugins.md`` says what changed from 1).
"""

from typing import TYPE_CHECKING

GROUP_CACHE_BACKENDS = "llbkit.cache_backends"
GROUP_EXPORTERS = "llbkit.exporters"
GROUP_FRONTENDS = "llbkit.frontends"
GROUP_HOOKS = "llbkit.hooks"
GROUP_SOURCES = "llbkit.sources"
GROUP_WORKERS = "llbkit.workers"

#: every name this package offers -> the module that defines it, imported on first use so that
#: a process needing one contract (a daemon's client: progress records) does not load them all
_WHERE = {
    "BlobSource": "context",
    "BuildResult": "context",
    "ByteReceiver": "stdio",
    "ByteSender": "stdio",
    "ByteSink": "context",
    "CacheBackend": "cache_backend",
    "CacheStore": "cache_backend",
    "ClientDirectory": "context",
    "ClientIO": "context",
    "Compression": "context",
    "DNSConfig": "context",
    "Direction": "cache_backend",
    "Executor": "worker",
    "ExportInfo": "exporter",
    "ExportJob": "exporter",
    "ExportsBlobs": "exporter",
    "Exporter": "exporter",
    "FetchedLayer": "source",
    "FileStat": "frontend",
    "Frontend": "frontend",
    "FrontendClient": "frontend",
    "FrontendJob": "frontend",
    "FrontendOutput": "frontend",
    "ImageConfig": "source",
    "ImageResolver": "source",
    "ImageStore": "imagestore",
    "InlineCache": "exporter",
    "LayerDescriptor": "context",
    "LayerOptions": "context",
    "LayeredSourceJob": "source",
    "LazySourceJob": "lazysource",
    "Manifest": "registries",
    "MountSpec": "worker",
    "Platform": "context",
    "PluginContext": "context",
    "ProcessIO": "stdio",
    "ProcessSpec": "worker",
    "ProgressEvent": "progress",
    "ProgressSink": "progress",
    "Reaping": "reaping",
    "RemoteLayer": "lazysource",
    "Registries": "registries",
    "RegistrySession": "registries",
    "ResolveMode": "source",
    "Result": "context",
    "SolveStatus": "progress",
    "Source": "source",
    "SourceJob": "source",
    "StoredTarget": "imagestore",
    "UsesImageStore": "imagestore",
    "Vertex": "progress",
    "VertexLog": "progress",
    "VertexStatus": "progress",
    "VertexWarning": "progress",
    "WithImageStore": "imagestore",
    "WindowSize": "stdio",
    "Worker": "worker",
    "hookimpl": "hookspecs",
    "DRIVER_GROUPS": "registry",
    "PluginInfo": "registry",
    "PluginRegistry": "registry",
}

if TYPE_CHECKING:
    from llbkit.core.plugins.cache_backend import CacheBackend, CacheStore, Direction
    from llbkit.core.plugins.context import (
        BlobSource,
        BuildResult,
        ByteSink,
        ClientDirectory,
        ClientIO,
        Compression,
        DNSConfig,
        LayerDescriptor,
        LayerOptions,
        Platform,
        PluginContext,
        Result,
    )
    from llbkit.core.plugins.exporter import (
        Exporter,
        ExportInfo,
        ExportJob,
        ExportsBlobs,
        InlineCache,
    )
    from llbkit.core.plugins.frontend import (
        FileStat,
        Frontend,
        FrontendClient,
        FrontendJob,
        FrontendOutput,
    )
    from llbkit.core.plugins.hookspecs import hookimpl
    from llbkit.core.plugins.imagestore import (
        ImageStore,
        StoredTarget,
        UsesImageStore,
        WithImageStore,
    )
    from llbkit.core.plugins.lazysource import LazySourceJob, RemoteLayer
    from llbkit.core.plugins.progress import (
        ProgressEvent,
        ProgressSink,
        SolveStatus,
        Vertex,
        VertexLog,
        VertexStatus,
        VertexWarning,
    )
    from llbkit.core.plugins.reaping import Reaping
    from llbkit.core.plugins.registries import Manifest, Registries, RegistrySession
    from llbkit.core.plugins.registry import DRIVER_GROUPS, PluginInfo, PluginRegistry
    from llbkit.core.plugins.source import (
        FetchedLayer,
        ImageConfig,
        ImageResolver,
        LayeredSourceJob,
        ResolveMode,
        Source,
        SourceJob,
    )
    from llbkit.core.plugins.stdio import ByteReceiver, ByteSender, ProcessIO, WindowSize
    from llbkit.core.plugins.worker import Executor, MountSpec, ProcessSpec, Worker


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DRIVER_GROUPS",
    "GROUP_CACHE_BACKENDS",
    "GROUP_EXPORTERS",
    "GROUP_FRONTENDS",
    "GROUP_HOOKS",
    "GROUP_SOURCES",
    "GROUP_WORKERS",
    "BlobSource",
    "BuildResult",
    "ByteReceiver",
    "ByteSender",
    "ByteSink",
    "CacheBackend",
    "CacheStore",
    "ClientDirectory",
    "ClientIO",
    "Compression",
    "DNSConfig",
    "Direction",
    "Executor",
    "ExportInfo",
    "ExportJob",
    "ExportsBlobs",
    "Exporter",
    "FetchedLayer",
    "FileStat",
    "Frontend",
    "FrontendClient",
    "FrontendJob",
    "FrontendOutput",
    "ImageConfig",
    "ImageResolver",
    "ImageStore",
    "InlineCache",
    "LayerDescriptor",
    "LayerOptions",
    "LayeredSourceJob",
    "LazySourceJob",
    "Manifest",
    "MountSpec",
    "Platform",
    "PluginContext",
    "PluginInfo",
    "PluginRegistry",
    "ProcessIO",
    "ProcessSpec",
    "ProgressEvent",
    "ProgressSink",
    "Reaping",
    "Registries",
    "RegistrySession",
    "RemoteLayer",
    "ResolveMode",
    "Result",
    "SolveStatus",
    "Source",
    "SourceJob",
    "StoredTarget",
    "UsesImageStore",
    "Vertex",
    "VertexLog",
    "VertexStatus",
    "VertexWarning",
    "WindowSize",
    "WithImageStore",
    "Worker",
    "hookimpl",
]
