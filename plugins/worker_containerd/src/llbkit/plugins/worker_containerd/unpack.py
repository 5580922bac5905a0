"""``unpack=true``: an exported image's layers applied into containerd's snapshotter, as
containerd's own unpacker does, so ``ctr run`` starts it without unpacking first.

Each layer becomes a committed snapshot named by its chain ID (containerd's convention, which
``ctr`` looks for), prepared on the previous one and filled by containerd's diff service; the
image's config is labelled ``containerd.io/gc.ref.snapshot.<snapshotter>`` with the top chain
ID, so the collector keeps the snapshots for as long as the image. All of it happens under the
store's lease, so nothing is collected half-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.errors import UserError
from llbkit.plugins.worker_containerd._pb.services.diff.v1 import diff_pb2, diff_pb2_grpc
from llbkit.plugins.worker_containerd._pb.services.snapshots.v1 import (
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from llbkit.plugins.worker_containerd._pb.types import descriptor_pb2

if TYPE_CHECKING:
    from llbkit.plugins.worker_containerd.store import ContainerdImageStore

__all__ = ["chain_ids", "unpack"]


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain ID of each layer stack: the first diff ID, then the digest of
    ``"<previous chain ID> <diff ID>"``."""
    found: list[str] = []
    for diff_id in diff_ids:
        if not found:
            found.append(diff_id)
        else:
            text = f"{found[-1]} {diff_id}".encode()
            found.append("sha256:" + hashlib.sha256(text).hexdigest())
    return found


async def unpack(store: ContainerdImageStore, channel: grpc.aio.Channel, manifest: str) -> None:
    """Unpack stored manifest ``manifest`` into ``store.snapshotter``."""
    where = f"{store.name}: unpacking {manifest} with the {store.snapshotter} snapshotter"
    image = await store.read_json(manifest)
    config_digest = str((image.get("config") or {}).get("digest", ""))
    config = await store.read_json(config_digest)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    layers = list(image.get("layers") or [])
    if len(diff_ids) != len(layers):
        raise UserError(
            f"{where}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}"
        )
    chains = chain_ids(diff_ids)
    steps = _Snapshots(channel, store.snapshotter, store.metadata())
    parent = ""
    try:
        for layer, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
            if not await steps.exists(chain):
                await steps.apply(layer, diff_id, chain, parent)
            parent = chain
    except grpc.aio.AioRpcError as err:
        raise UserError(f"{where}: {err.details() or err.code()}") from None
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if chains:
        await store.label(
            config_digest, {f"containerd.io/gc.ref.snapshot.{store.snapshotter}": chains[-1]}
        )


class _Snapshots:
    """containerd's snapshots and diff services, for one snapshotter."""

    def __init__(self, channel: grpc.aio.Channel, snapshotter: str, md: Any) -> None:
        self.snapshots: Any = snapshots_pb2_grpc.SnapshotsStub(channel)  # type: ignore[no-untyped-call]
        self.differ: Any = diff_pb2_grpc.DiffStub(channel)  # type: ignore[no-untyped-call]
        self.snapshotter = snapshotter
        self.md = md

    async def exists(self, name: str) -> bool:
        request = snapshots_pb2.StatSnapshotRequest(snapshotter=self.snapshotter, key=name)
        try:
            await self.snapshots.Stat(request, metadata=self.md)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def apply(self, layer: dict[str, Any], diff_id: str, chain: str, parent: str) -> None:
        """One layer: prepare on ``parent``, apply the blob, commit as ``chain``."""
        key = f"extract-{secrets.token_hex(8)} {chain}"
        prepared = await self.snapshots.Prepare(
            snapshots_pb2.PrepareSnapshotRequest(
                snapshotter=self.snapshotter, key=key, parent=parent
            ),
            metadata=self.md,
        )
        try:
            desc = descriptor_pb2.Descriptor(
                media_type=str(layer.get("mediaType", "")),
                digest=str(layer.get("digest", "")),
                size=int(layer.get("size", 0)),
            )
            applied = await self.differ.Apply(
                diff_pb2.ApplyRequest(diff=desc, mounts=prepared.mounts), metadata=self.md
            )
            if applied.applied.digest != diff_id:
                raise UserError(
                    f"layer {desc.digest} unpacks to {applied.applied.digest}, not {diff_id}"
                )
            try:
                await self.snapshots.Commit(
                    snapshots_pb2.CommitSnapshotRequest(
                        snapshotter=self.snapshotter, name=chain, key=key
                    ),
                    metadata=self.md,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                # Another unpack of an image sharing this layer committed it first: the
                # same content under the same chain ID; this one's work is dropped.
                await self._remove(key)
        except BaseException:
            await self._remove(key)
            raise

    async def _remove(self, key: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.snapshots.Remove(
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
                metadata=self.md,
            )
