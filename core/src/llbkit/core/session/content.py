"""The daemon's side of a client's content store (containerd's content service over the
session, the store named by the ``buildkit-attachable-store-id`` header), as the
``ClientDirectory`` a ``type=local`` cache writes into and as an ``--oci-layout``'s blobs.

Only blobs cross: ``blobs/sha256/<hex>`` by digest. The layout's ``index.json`` is the
client's, read before the build (a tag becomes ``digest=``) and updated after it from the
response's ``cache.manifest``, as buildctl does; so here ``update("index.json")`` leaves it to
the client and ``oci-layout`` is taken as there.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from llbkit.core.api._pb import content_pb2
from llbkit.core.errors import UserError
from llbkit.core.session.calls import read_message

__all__ = ["CONTENT_INFO", "STORE_HEADER", "SessionContentDirectory", "read_blob"]

STORE_HEADER = "buildkit-attachable-store-id"
_SERVICE = "/containerd.services.content.v1.Content/"
CONTENT_INFO = _SERVICE + "Info"
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CHUNK = 1 << 20


def _said(err: grpc.aio.AioRpcError) -> str:
    return err.details() or err.code().name.lower()


class _Sink:
    """A blob being written: WRITE messages, then COMMIT when the block ends."""

    def __init__(self, call: Any, skip: bool) -> None:
        self.call = call
        self.skip = skip  # the store has it already: what is written is dropped
        self.offset = 0

    async def write(self, data: bytes) -> None:
        if self.skip:
            return
        view = memoryview(data)
        for start in range(0, len(view), _CHUNK):
            piece = bytes(view[start : start + _CHUNK])
            await self.call.write(
                content_pb2.WriteContentRequest(
                    action=content_pb2.WRITE, offset=self.offset, data=piece
                )
            )
            self.offset += len(piece)
            await read_message(self.call)


class _Discard:
    async def write(self, data: bytes) -> None:
        return None


async def read_blob(channel: grpc.aio.Channel, store: str, digest: str) -> AsyncIterator[bytes]:
    """Blob ``digest`` of ``store``, in chunks; :class:`KeyError` when the store has none."""
    read = channel.unary_stream(
        _SERVICE + "Read",
        request_serializer=content_pb2.ReadContentRequest.SerializeToString,
        response_deserializer=content_pb2.ReadContentResponse.FromString,
    )
    try:
        async for answer in read(
            content_pb2.ReadContentRequest(digest=digest), metadata=((STORE_HEADER, store),)
        ):
            yield answer.data
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            raise KeyError(digest) from None
        raise UserError(f"reading {digest} from the client's {store}: {_said(err)}") from None


class SessionContentDirectory:
    """A ``ClientDirectory`` over a client's content store ``store``."""

    def __init__(self, channel: grpc.aio.Channel, store: str, path: str) -> None:
        self.channel = channel
        self.store = store
        self.path = path
        self._metadata = ((STORE_HEADER, store),)

    def __repr__(self) -> str:
        return f"{self.path} (on the client)"

    def _digest(self, name: str) -> str:
        found = _BLOB.fullmatch(name)
        if found is None:
            raise ValueError(f"{name!r} is not a blob of {self.path}")
        return "sha256:" + found.group(1)

    async def exists(self, name: str) -> bool:
        if name == "oci-layout":
            return True  # the client marks the layout when it updates index.json
        if name == "index.json":
            return False
        info = self.channel.unary_unary(
            CONTENT_INFO,
            request_serializer=content_pb2.InfoRequest.SerializeToString,
            response_deserializer=content_pb2.InfoResponse.FromString,
        )
        try:
            await info(content_pb2.InfoRequest(digest=self._digest(name)), metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise UserError(f"{self.path} on the client: {_said(err)}") from None
        return True

    @contextlib.asynccontextmanager
    async def read(self, name: str) -> AsyncIterator[AsyncIterator[bytes]]:
        if name == "index.json":
            raise KeyError(name)  # the client resolves tags itself and sends digest=
        yield read_blob(self.channel, self.store, self._digest(name))

    @contextlib.asynccontextmanager
    async def write(self, name: str) -> AsyncIterator[Any]:
        if name == "oci-layout":
            yield _Discard()
            return
        digest = self._digest(name)
        call: Any = self.channel.stream_stream(
            _SERVICE + "Write",
            request_serializer=content_pb2.WriteContentRequest.SerializeToString,
            response_deserializer=content_pb2.WriteContentResponse.FromString,
        )(metadata=self._metadata)
        try:
            stat = content_pb2.WriteContentRequest(
                action=content_pb2.STAT, ref=digest, expected=digest
            )
            await call.write(stat)
            try:
                await read_message(call)
                sink = _Sink(call, skip=False)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                sink = _Sink(call, skip=True)
            yield sink
            if not sink.skip:
                await call.write(
                    content_pb2.WriteContentRequest(
                        action=content_pb2.COMMIT,
                        ref=digest,
                        expected=digest,
                        total=sink.offset,
                        offset=sink.offset,
                    )
                )
                try:
                    await read_message(call)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # another export won
                        raise
                await call.done_writing()
        except grpc.aio.AioRpcError as err:
            raise UserError(
                f"writing {digest} to {self.path} on the client: {_said(err)}"
            ) from None
        finally:
            call.cancel()  # a write cut short: the client drops its temporary file

    async def update(self, name: str, change: Callable[[bytes | None], bytes]) -> None:
        if name != "index.json":
            raise ValueError(f"{name!r}: only index.json is updated, and by the client")
        # The client names the exported manifest in its index.json from the build's response.
