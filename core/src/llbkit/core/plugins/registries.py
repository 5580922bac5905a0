"""Image registries as core offers them to drivers: ``PluginContext.registries``.

Drivers that pull or push (the image exporter, a registry cache backend) talk to registries
through this, so every one of them honours the engine's ``[registry."host"]`` settings
(mirrors, plain HTTP, ``insecure``) and the user's credentials (``$DOCKER_CONFIG``) the same
way, and none of them carries a registry client of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Manifest", "Registries", "RegistrySession"]


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry serves it."""

    digest: str
    media_type: str
    data: bytes


class RegistrySession(Protocol):
    """One repository of one registry (``host/path``), with its connections and tokens.

    Errors are :class:`~llbkit.core.errors.UserError` subclasses naming the repository and the
    registry's answer.
    """

    async def has_blob(self, digest: str) -> bool:
        """Whether the repository has the blob (a push can skip it)."""
        ...

    async def mount_blob(self, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob that another of its repositories has; whether it did."""
        ...

    async def push_blob(self, digest: str, path: Path) -> None:
        """Upload the blob held in the local file ``path``, streamed, verified by the registry."""

    async def push_bytes(self, digest: str, data: bytes) -> None:
        """Upload a small blob (a config) from memory."""

    async def push_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        """Store a manifest or index under a tag or its digest."""

    async def get_manifest(self, reference: str) -> Manifest | None:
        """The manifest or index under a tag or digest, or ``None`` when there is none."""
        ...

    def read_blob(self, digest: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob's bytes (the caller verifies them against ``digest``); raises
        :class:`KeyError` when the repository has no such blob."""
        ...


class Registries(Protocol):
    """The engine's registry access."""

    def session(
        self, repository: str, *, push: bool = False, insecure: bool = False
    ) -> AbstractAsyncContextManager[RegistrySession]:
        """Open ``repository`` (``registry.example/app``, normalized as Docker does: ``app``
        is ``docker.io/library/app``) for the block.

        :param push: the session will write (the engine's implementation asks each request's
            registry for the scope that request needs, so it may ignore this).
        :param insecure: use plain HTTP for this registry even if the engine's config does not
            say so (an exporter's ``registry.insecure=true``).
        """
        ...
