"""``[worker.containerd]``: each exec step runs as a containerd container and task.

llbkit keeps its own store and hands containerd mounted rootfs directories (``docs/workers.md``
says why); containerd runs them with its runc v2 shim, under the worker's namespace.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.context import PluginContext
from llbkit.plugins.worker_containerd.executor import ContainerdExecutor
from llbkit.plugins.worker_containerd.store import DEFAULT_SNAPSHOTTER
from llbkit.sdk import workerconfig

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_NAMESPACE", "ContainerdWorker"]

SECTION = "[worker.containerd]"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE = "buildkit"
#: ``[worker.containerd]`` keys this worker takes (the engine keeps ``enabled``, ``gc*`` and
#: ``max-parallelism``); BuildKit's others are accepted and said to have no effect
OPTIONS = (
    "address",
    "namespace",
    "platforms",
    "labels",
    "snapshotter",
    "runtime",
    "rootless",
    "noProcessSandbox",
    "networkMode",
    "cniConfigPath",
    "cniBinaryPath",
    "cniPoolSize",
    "apparmor-profile",
    "selinux",
    "defaultCgroupParent",
    "userRemapUnsupported",
    "binary",
)


class ContainerdWorker:
    """``llbkit.workers: containerd``."""

    api_version: ClassVar[int] = 2
    #: its runtime has an image store, which the docker-image source uses
    keeps_images: ClassVar[bool] = True

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, config: Mapping[str, object]) -> ContainerdExecutor:
        import grpc

        from llbkit.plugins.worker_containerd._pb.services.version.v1 import version_pb2_grpc

        for key in config:
            if key not in OPTIONS:
                raise UnknownOptionError("[worker.containerd]", key, OPTIONS)
        address = _string(config, "address") or DEFAULT_ADDRESS
        address = address.removeprefix("unix://")
        namespace = _string(config, "namespace") or DEFAULT_NAMESPACE
        platforms = workerconfig.platforms(config, SECTION)
        extra = workerconfig.labels(config, SECTION, {})  # checked before connecting
        channel = grpc.aio.insecure_channel(f"unix://{address}")
        try:
            stub = version_pb2_grpc.VersionStub(channel)  # type: ignore[no-untyped-call]
            from google.protobuf import empty_pb2

            version = await stub.Version(empty_pb2.Empty(), timeout=10)
            uuid = await _server_uuid(channel) or version.revision
        except grpc.aio.AioRpcError as err:
            await channel.close()
            raise UserError(
                f"containerd at {address} is not reachable ({err.details() or err.code()}); "
                "start containerd, or set [worker.containerd] address"
            ) from None
        state = Path(self.ctx.state_dir or tempfile.mkdtemp(prefix="llbkit-containerd-"))
        state.mkdir(parents=True, exist_ok=True)
        owner = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:16]
        labels = {
            "org.mobyproject.buildkit.worker.executor": "containerd",
            "org.mobyproject.buildkit.worker.snapshotter": "overlayfs",
            "org.mobyproject.buildkit.worker.hostname": socket.gethostname(),
            "org.mobyproject.buildkit.worker.network": "host",
            "org.mobyproject.buildkit.worker.containerd.namespace": namespace,
            "org.mobyproject.buildkit.worker.containerd.uuid": uuid,
            "org.mobyproject.buildkit.worker.selinux.enabled": "false",
            **extra,
        }
        executor = ContainerdExecutor(
            channel,
            address=address,
            namespace=namespace,
            state=state,
            owner=owner,
            platforms=platforms,
            labels=labels,
            snapshotter=_string(config, "snapshotter") or DEFAULT_SNAPSHOTTER,
            dns=self.ctx.dns,
        )
        executor.reaped = await executor.reap_orphans()
        return executor

    async def reap(self, config: Mapping[str, object]) -> list[str]:
        """Remove what a killed owner of this state left in containerd: only when the state
        says a step ran (so builds that run no process never connect)."""
        state = Path(self.ctx.state_dir) if self.ctx.state_dir else None
        if state is None or not any(state.glob("step-*")):
            return []
        executor = await self.resolve(config)
        await executor.aclose()
        return executor.reaped


async def _server_uuid(channel: Any) -> str:
    """containerd's server UUID (its introspection service's ``Server``), which BuildKit
    labels the worker with. Its response is one string field, read here as a
    ``StringValue`` (the same wire form), as the introspection ``.proto`` needs
    ``google.rpc`` protos Debian does not ship; ``""`` from a containerd without it."""
    import grpc
    from google.protobuf import empty_pb2, wrappers_pb2

    call = channel.unary_unary(
        "/containerd.services.introspection.v1.Introspection/Server",
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=wrappers_pb2.StringValue.FromString,
    )
    try:
        found = await call(empty_pb2.Empty(), timeout=10)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return ""
        raise
    return str(found.value)


def _string(config: Mapping[str, object], key: str) -> str:
    value = config.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"[worker.containerd] {key} must be a string")
    return value
