"""containerd's content and image store: where ``store=true`` images go, where the docker-image
source looks images up first, and where the blobs it pulls for a build are kept.

Blobs go in under a lease (containerd's garbage collector takes nothing a lease holds, so a
blob written before its image is named, or a base image a build uses, stays), each with
``containerd.io/gc.ref.content.*`` labels naming the blobs it references, so that once an
image names its manifest the collector keeps the whole image for as long as the image exists.
A lease serves an hour and expires a day after it was taken (containerd then deletes it); the
engine deletes its leases when it stops, and one that a killed engine left (labelled with the
state root's owner) at its next start.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

import grpc

from llbkit.core.errors import UserError
from llbkit.core.plugins.imagestore import StoredTarget
from llbkit.plugins.worker_containerd._pb.services.content.v1 import content_pb2, content_pb2_grpc
from llbkit.plugins.worker_containerd._pb.services.images.v1 import images_pb2, images_pb2_grpc
from llbkit.plugins.worker_containerd._pb.services.leases.v1 import leases_pb2, leases_pb2_grpc
from llbkit.plugins.worker_containerd._pb.types import descriptor_pb2

__all__ = ["ContainerdImageStore"]

#: the label naming the state root (hashed) whose engine took a lease
OWNER_LABEL = "llbkit.worker.owner"
#: containerd's default snapshotter, which ``ctr run`` uses
DEFAULT_SNAPSHOTTER = "overlayfs"
#: how long a lease lives (containerd deletes it then), and how long it is used for new blobs
LEASE_EXPIRY = "24h"
LEASE_USE = 3600.0
_CHUNK = 1 << 20


class ContainerdImageStore:
    """The ``ImageStore`` of one containerd namespace."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        namespace: str,
        owner: str = "",
        snapshotter: str = DEFAULT_SNAPSHOTTER,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.owner = owner
        self.snapshotter = snapshotter
        self._channel = channel
        self._taken: list[str] = []
        self._content = content_pb2_grpc.ContentStub(channel)  # type: ignore[no-untyped-call]
        self._images = images_pb2_grpc.ImagesStub(channel)  # type: ignore[no-untyped-call]
        self._leases = leases_pb2_grpc.LeasesStub(channel)  # type: ignore[no-untyped-call]
        self._lease = ""
        self._lease_taken = 0.0

    @property
    def name(self) -> str:
        return f"containerd at {self.address} (namespace {self.namespace})"

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        found = [("containerd-namespace", self.namespace)]
        if self._lease:
            found.append(("containerd-lease", self._lease))
        return tuple(found)

    def _failed(self, doing: str, err: grpc.aio.AioRpcError) -> UserError:
        return UserError(f"{self.name}: {doing}: {err.details() or err.code()}")

    async def _leased(self) -> None:

        if self._lease and time.monotonic() - self._lease_taken < LEASE_USE:
            return

        lease = f"llbkit-{secrets.token_hex(8)}"
        labels = {"containerd.io/gc.expire": _expiry(LEASE_EXPIRY)}
        if self.owner:
            labels[OWNER_LABEL] = self.owner
        request = leases_pb2.CreateRequest(id=lease, labels=labels)
        try:
            await self._leases.Create(request, metadata=self._metadata())
        except grpc.aio.AioRpcError as err:
            raise self._failed("taking a lease", err) from None
        self._lease, self._lease_taken = lease, time.monotonic()
        self._taken.append(lease)

    async def hold_blob(self, digest: str) -> bool:
        # Held first, then looked up: containerd adds a resource to a lease whether or not the
        # content exists, and a blob found first could be collected before the lease has it.
        await self._hold(digest)
        if await self.has_blob(digest):
            return True
        await self._unhold(digest)
        return False

    async def _hold(self, digest: str) -> None:
        await self._leased()
        resource = leases_pb2.Resource(id=digest, type="content")
        try:
            await self._leases.AddResource(
                leases_pb2.AddResourceRequest(id=self._lease, resource=resource),
                metadata=self._metadata(),
            )
        except grpc.aio.AioRpcError as err:
            raise self._failed(f"holding {digest}", err) from None

    async def _unhold(self, digest: str) -> None:
        resource = leases_pb2.Resource(id=digest, type="content")
        with contextlib.suppress(grpc.aio.AioRpcError):  # only tidiness: the lease ends anyway
            await self._leases.DeleteResource(
                leases_pb2.DeleteResourceRequest(id=self._lease, resource=resource),
                metadata=self._metadata(),
            )

    async def release(self) -> None:
        """Delete the leases this store took (named images keep what they need); every one
        is tried, the first failure raised after (a lease left expires, or is reaped at the
        next start)."""
        taken, self._taken, self._lease = self._taken, [], ""
        failure: UserError | None = None
        for lease in taken:
            try:
                await self._delete_lease(lease)
            except UserError as err:
                failure = failure or err
        if failure is not None:
            raise failure

    async def reap(self) -> list[str]:
        """Delete the leases a killed engine of the same owner left."""
        if not self.owner:
            return []
        try:
            listed = await self._leases.List(
                leases_pb2.ListRequest(filters=[f"labels.{OWNER_LABEL}=={self.owner}"]),
                metadata=self._metadata(),
            )
        except grpc.aio.AioRpcError as err:
            raise self._failed("listing leases", err) from None
        found = [lease.id for lease in listed.leases if lease.id not in self._taken]
        for lease in found:
            await self._delete_lease(lease)
        return found

    async def _delete_lease(self, lease: str) -> None:
        try:
            await self._leases.Delete(leases_pb2.DeleteRequest(id=lease), metadata=self._metadata())
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise self._failed(f"deleting lease {lease}", err) from None

    async def has_blob(self, digest: str) -> bool:
        try:
            await self._content.Info(
                content_pb2.InfoRequest(digest=digest), metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise self._failed(f"looking up {digest}", err) from None
        return True

    async def write_blob(
        self,
        digest: str,
        data: AsyncIterable[bytes],
        *,
        size: int,
        media_type: str,
        children: Sequence[str] = (),
    ) -> None:
        await self._leased()
        labels = {f"containerd.io/gc.ref.content.{n}": child for n, child in enumerate(children)}
        # A ref of this writer's own: containerd locks a ref while it is written, and two
        # builds may write the same blob at once (the second commit finds it there).
        ref = f"llbkit-{digest}-{secrets.token_hex(4)}"
        call: Any = self._content.Write(metadata=self._metadata())
        try:
            await call.write(
                content_pb2.WriteContentRequest(
                    action=content_pb2.STAT, ref=ref, total=size, expected=digest
                )
            )
            await call.read()
            offset = 0
            async for chunk in data:
                for start in range(0, len(chunk), _CHUNK):
                    piece = chunk[start : start + _CHUNK]
                    await call.write(
                        content_pb2.WriteContentRequest(
                            action=content_pb2.WRITE,
                            ref=ref,
                            offset=offset,
                            data=piece,
                        )
                    )
                    await call.read()
                    offset += len(piece)
            await call.write(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    ref=ref,
                    total=offset,
                    offset=offset,
                    expected=digest,
                    labels=labels,
                )
            )
            await call.read()
            await call.done_writing()
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                # There already (another writer won): held by this lease too, and labelled
                # with what it must keep.
                await self._hold(digest)
                await self._label(digest, labels)
                return
            raise self._failed(f"writing {digest} ({media_type})", err) from None
        finally:
            call.cancel()

    async def _label(self, digest: str, labels: dict[str, str]) -> None:
        if not labels:
            return
        from google.protobuf import field_mask_pb2

        request = content_pb2.UpdateRequest(
            info=content_pb2.Info(digest=digest, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        try:
            await self._content.Update(request, metadata=self._metadata())
        except grpc.aio.AioRpcError as err:
            raise self._failed(f"labelling {digest}", err) from None

    async def name_image(self, name: str, *, digest: str, size: int, media_type: str) -> None:
        image = images_pb2.Image(
            name=name,
            target=descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size),
        )
        md = self._metadata()
        try:
            try:
                await self._images.Create(images_pb2.CreateImageRequest(image=image), metadata=md)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                from google.protobuf import field_mask_pb2

                await self._images.Update(
                    images_pb2.UpdateImageRequest(
                        image=image, update_mask=field_mask_pb2.FieldMask(paths=["target"])
                    ),
                    metadata=md,
                )
        except grpc.aio.AioRpcError as err:
            raise self._failed(f"naming image {name}", err) from None

    async def find_image(self, name: str) -> StoredTarget | None:
        try:
            found = await self._images.Get(
                images_pb2.GetImageRequest(name=name), metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self._failed(f"looking up image {name}", err) from None
        target = found.image.target
        return StoredTarget(target.digest, target.size, target.media_type)

    async def read_blob(self, digest: str) -> AsyncIterator[bytes]:
        call: Any = self._content.Read(
            content_pb2.ReadContentRequest(digest=digest), metadata=self._metadata()
        )
        try:
            async for response in call:
                yield response.data
        except grpc.aio.AioRpcError as err:
            raise self._failed(f"reading {digest}", err) from None
        finally:
            call.cancel()

    async def unpack(self, manifest: str) -> None:
        from llbkit.plugins.worker_containerd.unpack import unpack

        await self._leased()
        await unpack(self, self._channel, manifest)

    async def read_json(self, digest: str) -> dict[str, Any]:
        """A stored manifest or config, verified."""
        import hashlib
        import json

        data = bytearray()
        async for chunk in self.read_blob(digest):
            data += chunk
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{self.name}: {digest} does not match its digest")
        try:
            found = json.loads(data)
        except (ValueError, RecursionError):
            raise UserError(f"{self.name}: {digest} is not JSON") from None
        if not isinstance(found, dict):
            raise UserError(f"{self.name}: {digest} is not a JSON object")
        return found

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for a call in this store's namespace, under its lease."""
        return self._metadata()

    async def label(self, digest: str, labels: dict[str, str]) -> None:
        """Add ``labels`` to a stored blob."""
        await self._label(digest, labels)


def _expiry(duration: str) -> str:
    """RFC 3339 time ``duration`` (a Go duration, ``24h``) from now, as containerd's lease
    labels take it."""
    import datetime

    from llbkit.core.units import parse_duration

    seconds = parse_duration(duration, "lease expiry")
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
