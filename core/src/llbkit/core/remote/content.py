"""The client's content stores, served to the daemon as containerd's content service.

BuildKit's clients offer a ``type=local`` cache directory (store ``local:<dir>``) and an
``--oci-layout`` store (``oci:<name>``) this way; the daemon reads and writes blobs by digest
and never sees ``index.json``, which the client itself reads (a tag becomes ``digest=``) and
updates (from the response's ``cache.manifest``) — as buildctl does, so llbkit's client works
with BuildKit's daemon and buildctl with llbkitd.

A write lands in a temporary file beside the blobs, is hashed as it arrives, and is renamed
into place only when its commit names the digest it hashes to; an abandoned write leaves
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

from llbkit.core.api._pb import content_pb2
from llbkit.core.fs.durable import fsync_dir
from llbkit.core.session.content import STORE_HEADER

__all__ = ["CONTENT_METHODS", "STORE_HEADER", "ContentStores", "content_handler"]

_SERVICE = "containerd.services.content.v1.Content"
_pb = content_pb2
#: method -> (kind, request type, response type)
_METHODS: dict[str, tuple[str, Any, Any]] = {
    "Abort": ("unary_unary", _pb.AbortRequest, empty_pb2.Empty),
    "Delete": ("unary_unary", _pb.DeleteContentRequest, empty_pb2.Empty),
    "Info": ("unary_unary", _pb.InfoRequest, _pb.InfoResponse),
    "List": ("unary_stream", _pb.ListContentRequest, _pb.ListContentResponse),
    "ListStatuses": ("unary_unary", _pb.ListStatusesRequest, _pb.ListStatusesResponse),
    "Read": ("unary_stream", _pb.ReadContentRequest, _pb.ReadContentResponse),
    "Status": ("unary_unary", _pb.StatusRequest, _pb.StatusResponse),
    "Update": ("unary_unary", _pb.UpdateRequest, _pb.UpdateResponse),
    "Write": ("stream_stream", _pb.WriteContentRequest, _pb.WriteContentResponse),
}
CONTENT_METHODS = tuple(f"/{_SERVICE}/{m}" for m in sorted(_METHODS))
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_CHUNK = 1 << 20

Context = grpc.aio.ServicerContext[Any, Any]


def _store_of(stores: Mapping[str, Path], context: Context) -> Path | None:
    for key, value in context.invocation_metadata() or ():
        if key == STORE_HEADER:
            name = value.decode() if isinstance(value, bytes) else value
            return stores.get(name)
    return None


def _blob(root: Path, digest: str) -> Path | None:
    found = _DIGEST.fullmatch(digest)
    return root / "blobs" / "sha256" / found.group(1) if found else None


def _info(digest: str, st: os.stat_result) -> content_pb2.Info:
    info = content_pb2.Info(digest=digest, size=st.st_size)
    info.created_at.FromNanoseconds(st.st_mtime_ns)
    info.updated_at.FromNanoseconds(st.st_mtime_ns)
    return info


class ContentStores:
    """Directories by store id, each an OCI layout's ``blobs/sha256``."""

    def __init__(self, stores: Mapping[str, Path]) -> None:
        self.stores = stores

    async def _root(self, context: Context) -> Path:
        root = _store_of(self.stores, context)
        if root is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown content store")
        assert root is not None
        return root

    async def _path(self, context: Context, digest: str) -> Path:
        path = _blob(await self._root(context), digest)
        if path is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid digest {digest!r}")
        assert path is not None
        return path

    async def Info(self, request: Any, context: Context) -> Any:
        path = await self._path(context, request.digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"content {request.digest} not found")
        return content_pb2.InfoResponse(info=_info(request.digest, st))

    async def Update(self, request: Any, context: Context) -> Any:
        # Labels are containerd's garbage collection's business; a layout keeps none.
        answer = await self.Info(content_pb2.InfoRequest(digest=request.info.digest), context)
        return content_pb2.UpdateResponse(info=answer.info)

    async def List(self, request: Any, context: Context) -> AsyncIterator[Any]:
        folder = (await self._root(context)) / "blobs" / "sha256"
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                if re.fullmatch(r"[0-9a-f]{64}", entry.name) and entry.is_file():
                    found.append(_info("sha256:" + entry.name, entry.stat()))
        yield content_pb2.ListContentResponse(info=found)

    async def Delete(self, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, "the client's content is not the daemon's to delete"
        )

    async def Read(self, request: Any, context: Context) -> AsyncIterator[Any]:
        path = await self._path(context, request.digest)
        try:
            handle = open(path, "rb")  # noqa: SIM115 -- closed below, after streaming
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"content {request.digest} not found")
        with handle:
            handle.seek(request.offset)
            left = request.size if request.size > 0 else -1
            offset = request.offset
            while left != 0:
                want = _CHUNK if left < 0 else min(_CHUNK, left)
                data = await asyncio.to_thread(handle.read, want)
                if not data:
                    break
                yield content_pb2.ReadContentResponse(offset=offset, data=data)
                offset += len(data)
                if left > 0:
                    left -= len(data)

    async def Status(self, request: Any, context: Context) -> Any:
        # Writes do not outlive their stream here, so there is never one to resume.
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no write in progress for {request.ref}")

    async def ListStatuses(self, request: Any, context: Context) -> Any:
        return content_pb2.ListStatusesResponse()

    async def Abort(self, request: Any, context: Context) -> Any:
        return empty_pb2.Empty()

    async def Write(self, request_iterator: Any, context: Context) -> AsyncIterator[Any]:
        root = await self._root(context)
        ingest = _Ingest(root / "blobs" / "sha256")
        try:
            async for request in request_iterator:
                if request.expected and _blob(root, request.expected) is None:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"invalid digest {request.expected!r}"
                    )
                if request.action == content_pb2.STAT:
                    done = _blob(root, request.expected) if request.expected else None
                    if done is not None and done.exists():
                        await context.abort(
                            grpc.StatusCode.ALREADY_EXISTS, f"content {request.expected} exists"
                        )
                elif request.action == content_pb2.WRITE:
                    if request.offset != ingest.offset:
                        await context.abort(
                            grpc.StatusCode.OUT_OF_RANGE,
                            f"write at {request.offset}, but {ingest.offset} bytes are written",
                        )
                    await ingest.write(request.data)
                elif request.action == content_pb2.COMMIT:
                    problem = ingest.problem(request.total, request.expected)
                    if problem:
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
                    if not await ingest.commit(root):
                        await context.abort(
                            grpc.StatusCode.ALREADY_EXISTS, f"content {ingest.digest} exists"
                        )
                    yield content_pb2.WriteContentResponse(
                        action=content_pb2.COMMIT,
                        offset=ingest.offset,
                        total=ingest.offset,
                        digest=ingest.digest,
                    )
                    return
                yield content_pb2.WriteContentResponse(
                    action=request.action, offset=ingest.offset, total=request.total
                )
        finally:
            ingest.close()


class _Ingest:
    """One write: a temporary file beside the blobs, hashed as it grows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd = -1
        self.tmp: str | None = None
        self.hasher = hashlib.sha256()
        self.offset = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _open(self) -> int:
        if self.fd < 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            # As any file this user writes (the umask applies), like the embedded cache's.
            self.tmp = str(self.folder / f".ingest-{os.urandom(8).hex()}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self.fd = os.open(self.tmp, flags, 0o666)
        return self.fd

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(os.write, self._open(), data)
        self.hasher.update(data)
        self.offset += len(data)

    def problem(self, total: int, expected: str) -> str:
        if total and total != self.offset:
            return f"commit of {self.offset} bytes, {total} expected"
        if expected and expected != self.digest:
            return f"unexpected commit digest {self.digest}, expected {expected}"
        return ""

    async def commit(self, root: Path) -> bool:
        """Rename the data into place; ``False`` when the blob was there already."""
        final = _blob(root, self.digest)
        assert final is not None
        if final.exists():
            return False
        fd = self._open()
        await asyncio.to_thread(os.fsync, fd)
        os.close(fd)
        self.fd = -1
        assert self.tmp is not None
        os.replace(self.tmp, final)
        self.tmp = None
        fsync_dir(self.folder)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def content_handler(stores: ContentStores) -> grpc.GenericRpcHandler:
    """``stores`` served under containerd's service name (our messages are our own package)."""
    handlers = {}
    for method, (kind, request, response) in _METHODS.items():
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        handlers[method] = make(
            getattr(stores, method),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(_SERVICE, handlers)
