"""What a client asks the Controller for: BuildKit's ``SolveRequest`` and friends, typed.

Field for field the Python shape of ``control.proto`` (``moby.buildkit.v1``), so the daemon's
gRPC service only translates. Where llbkit goes further (several exporters in one build), the
request says so in its own fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llbkit.core.control.buildref import new_ref

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO
    from llbkit.core.plugins.frontend import FrontendJob

__all__ = [
    "CacheOptionsEntry",
    "ExporterRequest",
    "PruneRequest",
    "SolveRequest",
    "SolveResponse",
    "new_ref",
]


@dataclass(frozen=True)
class ExporterRequest:
    """One ``--output``: the exporter's name (``type=``) and its other attributes."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheOptionsEntry:
    """One ``--export-cache`` or ``--import-cache``: a cache backend's name and attributes."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SolveRequest:
    """One build.

    :param ref: chosen by the caller, so it can attach to the build's status before it starts
        (:func:`new_ref` makes one).
    :param definition: a marshaled ``pb.Definition`` to build, when there is no frontend.
    :param frontend: the frontend to run instead (``dockerfile.v0``), with its attributes
        (``--opt``) and named input definitions.
    :param exporters: where the result goes; several are allowed (BuildKit v0.11 takes one).
    :param cache_exports: ``--export-cache``: where the build cache goes (``docs/cache.md``).
    :param cache_imports: ``--import-cache``: caches asked after the local store, in order.
    :param entitlements: ``--allow`` (``network.host``, ``security.insecure``); the engine's
        ``insecure-entitlements`` must list them too.
    :param session: the client's side (its files, secrets, SSH agents, outputs).
    :param source: how to name the definition in messages (the CLI gives a file name or
        ``<stdin>``).
    :param frontend_job: a frontend the caller runs itself, in place of a named one: the
        daemon's gateway for a frontend outside it (buildctl's ``build`` is one).
    """

    ref: str
    session: ClientIO
    definition: bytes | None = None
    frontend: str = ""
    frontend_attrs: Mapping[str, str] = field(default_factory=dict)
    frontend_inputs: Mapping[str, bytes] = field(default_factory=dict)
    exporters: Sequence[ExporterRequest] = ()
    cache_exports: Sequence[CacheOptionsEntry] = ()
    cache_imports: Sequence[CacheOptionsEntry] = ()
    entitlements: Sequence[str] = ()
    source: str = "SolveRequest.definition"
    frontend_job: FrontendJob | None = None

    def without_cache(self) -> SolveRequest:
        """The same request with every step run anew (``--no-cache``), as buildctl asks it:
        a frontend is told (``no-cache``), a definition has each vertex marked."""
        if self.frontend:
            return replace(self, frontend_attrs={"no-cache": "", **self.frontend_attrs})
        if self.definition is None:
            return self
        from llbkit.core.llb.definition import ignore_cache

        return replace(self, definition=ignore_cache(self.definition, self.source))


@dataclass(frozen=True)
class SolveResponse:
    """What a finished build answers.

    :param exporter_response: every exporter's response merged, later ones over earlier ones
        (BuildKit's one map: what ``--metadata-file`` writes).
    :param exporter_responses: each exporter's own response, in the request's order.
    """

    ref: str
    exporter_response: Mapping[str, str] = field(default_factory=dict)
    exporter_responses: Sequence[Mapping[str, str]] = ()


@dataclass(frozen=True)
class PruneRequest:
    """BuildKit's ``PruneRequest``: which unreferenced records to delete.

    :param keep_duration: seconds; records used more recently are kept.
    :param keep_bytes: stop once what is left is at most this size.
    """

    filters: Sequence[str] = ()
    all: bool = False
    keep_duration: float = 0
    keep_bytes: int = 0
