"""The engine's registry access for drivers: the ``Registries`` contract over the client.

One per engine; it keeps tokens across sessions and builds the TLS context once, only when a
registry speaks HTTPS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llbkit.core.plugins.registries import Manifest

if TYPE_CHECKING:
    from llbkit.core.reference import Reference
    from llbkit.core.registry.client import RegistryClient

# The client (and TLS) load on the first registry a build talks to, not with every engine.

__all__ = ["EngineRegistries"]


class _Session:
    """One repository through one client."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client = client
        self.ref = ref

    async def has_blob(self, digest: str) -> bool:
        return await self.client.has_blob(self.ref, digest)

    async def mount_blob(self, digest: str, from_repository: str) -> bool:
        return await self.client.mount_blob(self.ref, digest, from_repository)

    async def push_blob(self, digest: str, path: Path) -> None:
        await self.client.push_blob(self.ref, digest, path)

    async def push_bytes(self, digest: str, data: bytes) -> None:
        await self.client.push_blob(self.ref, digest, data)

    async def push_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        await self.client.push_manifest(self.ref, reference, data, media_type)

    async def get_manifest(self, reference: str) -> Manifest | None:
        found = await self.client.get_manifest(self.ref, reference)
        return None if found is None else Manifest(*found)

    @asynccontextmanager
    async def read_blob(self, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        from llbkit.core.registry.client import ManifestUnknownError

        try:
            async with self.client.blob(self.ref, digest) as chunks:
                yield chunks
        except ManifestUnknownError:  # the registry answered 404: the contract's KeyError
            raise KeyError(digest) from None


class EngineRegistries:
    """``[registry."host"]`` settings, tokens and TLS, shared by every driver of an engine."""

    def __init__(self, hosts: Mapping[str, Mapping[str, Any]]) -> None:
        self.hosts = {h: dict(v) for h, v in hosts.items()}
        self._tokens: dict[tuple[str, str, str], str] = {}  # host, repository, whose
        # host, repository, whose, digest: what the registry has given whom
        self._proven: set[tuple[str, str, str, str]] = set()

    def client(self, ref: Reference, *, insecure: bool = False) -> RegistryClient:
        """A client for the running event loop (use with ``async with``); ``insecure`` (an
        image export's ``registry.insecure``) reaches ``ref``'s registry over plain HTTP, then
        HTTPS without verification, as BuildKit's push does."""
        from llbkit.core.registry.client import RegistryClient, RegistryConfig

        hosts = self.hosts
        if insecure:
            settings = {**hosts.get(ref.domain, {}), "http": True, "insecure": True}
            hosts = {**hosts, ref.domain: settings}
        return RegistryClient(RegistryConfig(hosts), self._tokens, True, proven=self._proven)

    @asynccontextmanager
    async def session(
        self, repository: str, *, push: bool = False, insecure: bool = False
    ) -> AsyncIterator[_Session]:
        from llbkit.core.reference import parse_reference

        ref = parse_reference(repository)
        async with self.client(ref, insecure=insecure) as client:
            yield _Session(client, ref)
