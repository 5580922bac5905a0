"""The client of an embedded build: this process, its files and its standard output."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio

from llbkit.core.client.directory import FileDirectory
from llbkit.core.errors import UserError, no_ssh_agent
from llbkit.core.fs.archivefile import TERMINAL, archive_file
from llbkit.core.fs.sendpatterns import SenderError
from llbkit.core.fs.sync import sync_tree
from llbkit.core.plugins.blobcheck import DIGEST
from llbkit.core.snapshot.layers import apply_layer

__all__ = ["EmbeddedClient", "FileSink"]


class FileSink:
    """An output's file, written off the event loop."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    async def write(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self.stream.write, data)


@dataclass
class EmbeddedClient:
    """Directories by name (``--local``), secrets by id (``--secret``), this process's stdout."""

    locals: Mapping[str, Path] = field(default_factory=dict)
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    ssh: Mapping[str, Path] = field(default_factory=dict)
    layouts: Mapping[str, Path] = field(default_factory=dict)
    stdout: BinaryIO | None = None
    #: directories never sent as part of a context (besides the state root mirrored into)
    private: tuple[Path, ...] = ()

    @asynccontextmanager
    async def open_output(self, dest: str) -> AsyncIterator[FileSink]:
        if dest == "-":
            out = self.stdout or sys.stdout.buffer
            if out.isatty():
                raise UserError(TERMINAL)
            yield FileSink(out)
            out.flush()
            return
        with archive_file(dest, UserError) as stream:
            yield FileSink(stream)

    async def write_tree(self, dest: str, tree: Path) -> None:
        target = Path(dest)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write to {dest}: {err.strerror}") from None
        # Owned by whoever runs the build, as buildctl writes a local output (and llbkit's
        # client of a daemon): the image's owners are the image's, not the client's.
        owner = (os.getuid(), os.getgid())
        await anyio.to_thread.run_sync(
            functools.partial(
                apply_layer, tree, target, "plain", sockets_as_files=True, owner=owner
            )
        )

    def directory(self, path: str) -> FileDirectory:
        # This process's filesystem is the client's; FileDirectory reports its errors as
        # UserError naming the path, as open_output does.
        return FileDirectory(Path(path))

    async def secret(self, id: str) -> bytes:
        try:
            return self.secrets[id]
        except KeyError:
            raise UserError(
                f"secret {id!r} was not provided (use --secret id={id},src=…)"
            ) from None

    @asynccontextmanager
    async def layout_blob(self, store: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        if store not in self.layouts:
            raise UserError(
                f"the build reads OCI layout {store!r}, which was not given "
                f"(use --oci-layout {store}=<path>)"
            )
        if not DIGEST.fullmatch(digest):  # it becomes a path: never ``sha256:../../dev/zero``
            raise UserError(f"OCI layout {store}: {digest!r} is not a sha256 digest")
        algo, _, hexdigest = digest.partition(":")
        path = self.layouts[store] / "blobs" / algo / hexdigest
        try:
            handle = open(path, "rb")  # noqa: SIM115 -- closed below, after streaming
        except FileNotFoundError:
            raise UserError(f"OCI layout {store}: blob {digest} is not there") from None
        except OSError as err:
            raise UserError(f"OCI layout {store}: blob {digest}: {err.strerror}") from None

        async def chunks() -> AsyncIterator[bytes]:
            while data := await anyio.to_thread.run_sync(handle.read, 1 << 20):
                yield data

        try:
            yield chunks()
        finally:
            handle.close()

    async def ssh_agent(self, id: str) -> Path:
        try:
            return self.ssh[id or "default"]
        except KeyError:
            raise UserError(no_ssh_agent(id, forwarded=bool(self.ssh))) from None

    def _local(self, name: str) -> Path:
        try:
            path = self.locals[name]
        except KeyError:
            given = ", ".join(sorted(self.locals)) or "none"
            raise UserError(
                f"the build reads local directory {name!r}, which was not given "
                f"(use --local {name}=<path>; given: {given})"
            ) from None
        if not path.is_dir():
            raise UserError(f"local directory {name!r} ({path}) is not a directory")
        return path

    def local_identity(self, name: str) -> str:
        return f"embedded:{os.path.realpath(self._local(name))}"

    async def sync_local(
        self,
        name: str,
        dest: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_paths: Sequence[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> set[str]:
        src = self._local(name)  # copied here, not sent: nothing crosses to count
        # The state root the mirror lives in is never part of a context, even when the context
        # holds it (``--root ./state``): it would copy itself into itself.
        skip = (*self.private, *_state_root_of(dest))
        try:
            return await anyio.to_thread.run_sync(
                lambda: sync_tree(
                    src,
                    dest,
                    include=include,
                    exclude=exclude,
                    follow_paths=follow_paths,
                    skip_dirs=skip,
                )
            )
        except SenderError as err:
            # This client is the sender: its refusal reads as a daemon reports a session's.
            raise UserError(f"error from sender: {err}") from None


def _state_root_of(path: Path) -> tuple[Path, ...]:
    """The llbkit state root ``path`` is inside (it holds ``state.db`` and ``lock``), if any."""
    for parent in path.absolute().parents:
        if (parent / "state.db").is_file() and (parent / "lock").is_file():
            return (parent,)
    return ()
