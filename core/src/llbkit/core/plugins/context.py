"""What every driver is handed and what it hands back: the vocabulary the contracts share.

Kept free of engine types so that a plugin written against contract v2 keeps importing when the
engine changes. Nothing here assumes the client's files are on this machine: anything that comes
from or goes to the client passes through :class:`ClientIO`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llbkit.core.plugins.registries import Registries

__all__ = [
    "BlobSource",
    "BuildResult",
    "ByteSink",
    "ClientDirectory",
    "ClientIO",
    "Compression",
    "DNSConfig",
    "LayerDescriptor",
    "LayerOptions",
    "Platform",
    "PluginContext",
    "Result",
]

Compression = Literal["gzip", "zstd", "uncompressed"]


@dataclass(frozen=True)
class Platform:
    """An OCI platform, as LLB's ``pb.Platform`` carries it."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``; raises :class:`ValueError` naming what is wrong."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


@dataclass(frozen=True)
class PluginContext:
    """Handed to a driver's constructor once per engine: who it is, its config, where it may
    write, and the engine's services it may use.

    :param name: the entry-point name the driver was chosen by (``oci``, ``s3``...).
    :param distribution: ``"<dist> <version>"`` that provides it, for messages.
    :param config: the driver's own section of the engine config (e.g. ``[worker.oci]``).
    :param state_dir: a directory under the engine's root that belongs to this driver alone.
    :param cache_dir: a directory of this driver's for what only saves time and outlives any
        one root (what it read from a library's own files, say): every engine of the user
        shares it, and losing it costs time, never a result. ``None``: keep nothing.
    :param registries: the engine's access to image registries (pull, push, mount), configured
        from ``[registry."host"]`` (mirrors, plain HTTP, insecure) and the user's credentials.
    :param dns: the engine's ``[dns]``, for a worker's containers' ``/etc/resolv.conf``;
        ``None`` when the config has none (the host's resolv.conf is used).
    """

    name: str
    distribution: str
    config: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None
    registries: Registries | None = None
    dns: DNSConfig | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class DNSConfig:
    """``[dns]`` of the engine's config; each list, when not empty, replaces what the host's
    ``/etc/resolv.conf`` says (BuildKit's ``nameservers``, ``options``, ``searchDomains``)."""

    nameservers: Sequence[str] = ()
    options: Sequence[str] = ()
    search_domains: Sequence[str] = ()


@dataclass(frozen=True)
class LayerOptions:
    """How an exporter wants a result's layers as blobs.

    :param level: the compressor's level; ``None`` for its default.
    :param epoch: clamp file times in the layer tars to this (``rewrite-timestamp``).
    :param force: compress every layer again, pulled ones included (``force-compression``).
    """

    compression: Compression = "gzip"
    level: int | None = None
    epoch: int | None = None
    force: bool = False


@dataclass(frozen=True)
class LayerDescriptor:
    """One layer of a result as an image blob.

    :param media_type: the OCI media type of the blob (``…layer.v1.tar+gzip``); exporters
        writing Docker media types map it.
    :param diff_id: the digest of the uncompressed tar.
    :param description: what made the layer, as BuildKit describes it (``pulled from
        REF@DIGEST``, ``mount / from exec …``, a file step's name); an image's history names a
        layer no Dockerfile step recorded with it.
    """

    digest: str
    diff_id: str
    size: int
    compression: Compression
    media_type: str
    description: str = ""


@dataclass(frozen=True)
class BlobSource:
    """A registry repository a blob is known to exist in (it was pulled from there), so a push
    to another repository of the same registry can mount it instead of uploading it."""

    registry: str
    repository: str


@runtime_checkable
class Result(Protocol):
    """One output of a build: a filesystem tree as a chain of layers, with a portable key.

    The engine holds it (leased) while the driver that received it runs; use it only within
    that call. ``key`` is the same on every machine for the same inputs.
    """

    @property
    def key(self) -> str:
        """The portable cache key of this result (``sha256:…``)."""
        ...

    def mount(self) -> AbstractAsyncContextManager[Path]:
        """Give read-only access to the tree as a local directory for the duration of the block."""
        ...

    async def layers(self, options: LayerOptions) -> Sequence[LayerDescriptor]:
        """The result's layers as image blobs, bottom first; made once and kept, so a later
        export with the same options costs nothing (a pulled layer is its original blob;
        ``force`` recompresses every time)."""
        ...

    async def blob_path(self, digest: str) -> Path:
        """A local file holding the blob of one of :meth:`layers`; readable while the result
        is held. Raises :class:`KeyError` for a digest that is not one of this result's."""
        ...

    def blob_sources(self, digest: str) -> Sequence[BlobSource]:
        """Repositories the blob can be mounted from (empty when none is known)."""
        ...


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: one result, or one per platform, plus exporter metadata.

    :param refs: results by platform string (``linux/amd64``); a single-platform build has one.
    :param metadata: frontend-provided data such as ``containerimage.config`` (JSON bytes).
    """

    refs: Mapping[str, Result]
    metadata: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def single(self) -> Result | None:
        """The only result, or ``None`` when the build is multi-platform or empty."""
        return next(iter(self.refs.values())) if len(self.refs) == 1 else None

    @property
    def is_map(self) -> bool:
        """A result by platform (BuildKit's ``Refs``), exported as one even for one platform
        (an index, a folder per platform): several, or the frontend's ``refs.platforms``."""
        return len(self.refs) > 1 or "refs.platforms" in self.metadata

    @property
    def platforms(self) -> list[str]:
        """Every platform of the build, in the frontend's order (``refs.platforms``): one
        whose result is empty (``scratch``, absent from ``refs``) too; else ``refs``'."""
        listed = self.metadata.get("refs.platforms")
        if not listed:
            return list(self.refs)
        return [str(p["ID"]) for p in json.loads(listed)["Platforms"]]


class ByteSink(Protocol):
    """An open byte stream towards the client (a file it chose, or its standard output)."""

    async def write(self, data: bytes) -> None:
        """Send more bytes."""


class ClientDirectory(Protocol):
    """A directory on the client's machine that a driver keeps files in (``type=local``'s
    cache), so a daemon's driver reaches the client's disk, not its own.

    Names are relative paths inside it (``blobs/sha256/<hex>``, ``index.json``); a name that
    would leave it (absolute, with ``..``, empty) raises :class:`ValueError`.
    """

    async def exists(self, name: str) -> bool:
        """Whether ``name`` is a file in the directory (a missing directory has none)."""
        ...

    def read(self, name: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream file ``name`` in chunks for the duration of the block; raises
        :class:`KeyError` (``name``) when there is none."""
        ...

    def write(self, name: str) -> AbstractAsyncContextManager[ByteSink]:
        """Write file ``name``, creating its parent directories; it appears whole or not at all.

        The bytes go to a temporary name, durably renamed over ``name`` when the block ends
        normally; if the block raises, nothing of it is left behind.
        """
        ...

    async def update(self, name: str, change: Callable[[bytes | None], bytes]) -> None:
        """Replace file ``name`` with ``change(its bytes, or None when there is none)``,
        written as :meth:`write` does.

        Runs under an exclusive lock of ``<name>.lock`` (``flock``, as BuildKit locks
        ``index.json.lock``) held across the read and the write, so concurrent updates, from
        other processes too, never lose one another. ``change`` runs while the lock is held,
        in a worker thread: keep it quick and free of I/O. If it raises, the file is kept.
        """


class ClientIO(Protocol):
    """The client's side of a build. Embedded, it is this process; with a daemon, a session.

    Drivers never open client paths themselves: a daemon's exporter writing ``dest=out.tar``
    must reach the client's disk, not its own.
    """

    def open_output(self, dest: str) -> AbstractAsyncContextManager[ByteSink]:
        """Open ``dest`` (``-`` for stdout) on the client; the file appears whole or not at all."""
        ...

    async def write_tree(self, dest: str, tree: Path) -> None:
        """Copy a local tree into directory ``dest`` on the client."""

    def directory(self, path: str) -> ClientDirectory:
        """Directory ``path`` on the client, to keep files in (``--export-cache
        type=local,dest=path``); it need not exist yet, and is created by the first write."""
        ...

    async def secret(self, id: str) -> bytes:
        """Fetch a secret the client provides (``--secret id=…``); raises
        :class:`~llbkit.core.errors.UserError` if it has none."""
        ...

    def layout_blob(
        self, store: str, digest: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob of the OCI layout the client named ``store`` (``--oci-layout``)."""
        ...

    async def ssh_agent(self, id: str) -> Path:
        """A local socket speaking the SSH agent protocol for ``--ssh id`` (``""``: the
        ``default`` one); raises :class:`~llbkit.core.errors.UserError` if none."""
        ...

    def local_identity(self, name: str) -> str:
        """A stable name for the client's directory ``name`` (``--local name=path``).

        The engine keeps one mirror per identity, so a rebuild transfers only what changed.
        Raises :class:`~llbkit.core.errors.UserError` if the client has no such directory.
        """
        ...

    async def sync_local(
        self,
        name: str,
        dest: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> Collection[str] | None:
        """Make ``dest`` (which holds the previous sync, or nothing) mirror directory ``name``.

        Only changed files travel; a changed file is replaced, never modified in place.
        ``follow_paths`` are symlinks whose targets are included too. Returns the paths
        (relative to ``dest``) it made, replaced or removed, or None if it cannot say.
        ``progress(n)``, as the files cross a connection, says ``n`` bytes have so far (of
        fsutil's packets, as BuildKit counts what it shows); a client whose files cross none
        (this process's) need not call it.
        """
