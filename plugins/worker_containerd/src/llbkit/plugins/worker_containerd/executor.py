"""Exec steps as containerd containers and tasks (the runc v2 shim), over containerd's gRPC API.

A step's rootfs and mounts stay llbkit's: the engine mounts them as for the runc worker, and
the OCI spec (``llbkit.sdk.ocispec``, the same the runc worker writes) names them by path, so
containerd runs exactly what runc would. The task's output comes through FIFOs this process
reads while the task runs; cancelling kills the task's processes and deletes task and container.
Every container carries a label with this executor's owner, so one left by a killed engine is
found and removed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import grpc
from google.protobuf import any_pb2

from llbkit.core.errors import UserError
from llbkit.plugins.worker_containerd._pb.services.containers.v1 import (
    containers_pb2,
    containers_pb2_grpc,
)
from llbkit.plugins.worker_containerd._pb.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from llbkit.plugins.worker_containerd.store import (
    DEFAULT_SNAPSHOTTER,
    OWNER_LABEL,
    ContainerdImageStore,
)
from llbkit.sdk.ocispec import build_spec, hosts_file, resolv_conf

if TYPE_CHECKING:
    from llbkit.core.plugins.context import DNSConfig, Platform
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.stdio import ByteSender, ProcessIO
    from llbkit.core.plugins.worker import MountSpec, ProcessSpec

__all__ = ["OWNER_LABEL", "RUNTIME", "ContainerdExecutor"]

RUNTIME = "io.containerd.runc.v2"
SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
#: which state root's engine made a container: its leftovers are that engine's to remove
_IDS = itertools.count()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def container_name(id: str) -> str:
    """A containerd id for step ``id``, unique in this process and across crashes."""
    safe = _UNSAFE.sub("_", id)[:64].lstrip(".-") or "llbkit"
    return f"{safe}-{os.getpid()}-{next(_IDS)}"


class ContainerdExecutor:
    """Runs processes through the containerd at ``address``, in ``namespace``."""

    interactive = False

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        address: str,
        namespace: str,
        state: Path,
        owner: str,
        platforms: Sequence[Platform],
        labels: Mapping[str, str],
        snapshotter: str = DEFAULT_SNAPSHOTTER,
        dns: DNSConfig | None = None,
    ) -> None:
        self.channel = channel
        self.dns = dns
        self.address = address
        self.namespace = namespace
        self.state = state
        self.owner = owner
        self._platforms = list(platforms)
        self._labels = dict(labels)
        self._metadata = (("containerd-namespace", namespace),)
        self._containers = containers_pb2_grpc.ContainersStub(channel)  # type: ignore[no-untyped-call]
        self._tasks = tasks_pb2_grpc.TasksStub(channel)  # type: ignore[no-untyped-call]
        self._running: set[str] = set()
        self._cleanups: set[asyncio.Future[None]] = set()
        #: what :meth:`reap_orphans` removed as this executor started
        self.reaped: list[str] = []
        self._store = ContainerdImageStore(channel, address, namespace, owner, snapshotter)

    @property
    def image_store(self) -> ContainerdImageStore:
        """containerd's own content and images, where ``store=true`` images go."""
        return self._store

    @property
    def platforms(self) -> Sequence[Platform]:
        return self._platforms

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    def _failed(self, doing: str, err: grpc.aio.AioRpcError) -> UserError:
        return UserError(f"containerd at {self.address}: {doing}: {err.details() or err.code()}")

    async def run(
        self,
        id: str,
        process: ProcessSpec,
        rootfs: Path,
        mounts: Sequence[MountSpec],
        progress: ProgressSink,
        *,
        io: ProcessIO | None = None,
        started: Callable[[], None] | None = None,
    ) -> int:
        if process.tty or (io is not None and (io.stdin is not None or io.resize is not None)):
            raise UserError(
                "the containerd worker gives processes no terminal or input yet; use the OCI "
                "worker ([worker.oci]) for interactive containers"
            )
        if id in self._running:
            raise UserError(f"container {id} is already running in the containerd worker")
        self._running.add(id)
        name = container_name(id)
        work = Path(tempfile.mkdtemp(dir=self.state, prefix="step-"))
        try:
            (work / "hosts").write_text(hosts_file(process))
            (work / "resolv.conf").write_text(resolv_conf(process.network, dns=self.dns))
            spec = build_spec(
                process,
                rootfs,
                mounts,
                hosts=work / "hosts",
                resolv=work / "resolv.conf",
                id=name,
            )
            return await self._run(name, spec, work=work, progress=progress, io=io, started=started)
        finally:
            self._running.discard(id)
            shutil.rmtree(work, ignore_errors=True)

    async def _run(
        self,
        name: str,
        spec: dict[str, Any],
        *,
        work: Path,
        progress: ProgressSink,
        io: ProcessIO | None,
        started: Callable[[], None] | None,
    ) -> int:
        md = self._metadata
        container = containers_pb2.Container(
            id=name,
            labels={OWNER_LABEL: self.owner},
            runtime=containers_pb2.Container.Runtime(name=RUNTIME),
            spec=any_pb2.Any(type_url=SPEC_TYPE, value=json.dumps(spec).encode()),
        )
        try:
            await self._containers.Create(
                containers_pb2.CreateContainerRequest(container=container), metadata=md
            )
        except grpc.aio.AioRpcError as err:
            raise self._failed("creating a container", err) from None
        exited = False
        try:
            async with _Output(work) as output:
                try:
                    await self._tasks.Create(
                        tasks_pb2.CreateTaskRequest(
                            container_id=name, stdout=output.stdout, stderr=output.stderr
                        ),
                        metadata=md,
                    )
                except grpc.aio.AioRpcError as err:
                    raise self._failed("creating the task", err) from None
                output.opened()
                code = await self._started(name, output, progress, io, started)
                exited = True
                return code
        finally:
            if exited:
                # Its process has exited: deleting task and container need not hold the step
                # (a third of a short step's time); aclose waits for what is still going.
                cleanup = asyncio.ensure_future(self._delete(name))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
            else:
                with anyio.CancelScope(shield=True):
                    await self._remove(name)

    async def _started(
        self,
        name: str,
        output: _Output,
        progress: ProgressSink,
        io: ProcessIO | None,
        started: Callable[[], None] | None,
    ) -> int:
        md = self._metadata
        code = 0
        async with anyio.create_task_group() as group:
            group.start_soon(output.pump, 1, io.stdout if io else None, progress)
            group.start_soon(output.pump, 2, io.stderr if io else None, progress)
            try:
                waiting = self._tasks.Wait(tasks_pb2.WaitRequest(container_id=name), metadata=md)
                await self._tasks.Start(tasks_pb2.StartRequest(container_id=name), metadata=md)
                if started is not None:
                    started()
                code = (await waiting).exit_status
            except grpc.aio.AioRpcError as err:
                raise self._failed("running the task", err) from None
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._kill(name)
                raise
        return code

    async def _kill(self, name: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._tasks.Kill(
                tasks_pb2.KillRequest(container_id=name, signal=signal.SIGKILL, all=True),
                metadata=self._metadata,
            )

    async def _remove(self, name: str) -> None:
        """Kill what is left of the task, then delete task and container; absent is fine."""
        await self._kill(name)
        # A killed task is deleted only once it has stopped (containerd refuses before).
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._tasks.Wait(
                tasks_pb2.WaitRequest(container_id=name), metadata=self._metadata, timeout=30
            )
        await self._delete(name)

    async def _delete(self, name: str) -> None:
        """Delete a stopped task and its container; absent is fine."""
        md = self._metadata
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=name), metadata=md)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._containers.Delete(
                containers_pb2.DeleteContainerRequest(id=name), metadata=md
            )

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        if id not in self._running:
            raise UserError(f"no container {id} is running in the containerd worker")
        raise UserError(
            f"container {id}: the containerd worker cannot add a process to a running "
            "container yet; use the OCI worker ([worker.oci]) for gateway containers"
        )

    async def containers(self) -> list[str]:
        """The containers this executor's owner has in the namespace (what a crash leaves)."""
        try:
            listed = await self._containers.List(
                containers_pb2.ListContainersRequest(
                    filters=[f"labels.{OWNER_LABEL}=={self.owner}"]
                ),
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as err:
            raise self._failed("listing containers", err) from None
        return [c.id for c in listed.containers]

    async def reap_orphans(self) -> list[str]:
        """Remove the containers (and tasks) and leases a killed engine of this state root left."""
        found = [c for c in await self.containers() if c not in self._running]
        for name in found:
            await self._remove(name)
        for leftover in self.state.glob("step-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        await self._store.reap()  # and the leases it held
        return found

    async def aclose(self) -> None:
        # Each part is tried whatever the others do (containerd may have gone away); the
        # channel is closed last, always.
        try:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
            try:
                for name in await self.containers():
                    await self._remove(name)
            finally:
                await self._store.release()
        finally:
            await self.channel.close()


class _Output:
    """The task's stdout and stderr FIFOs, read by this process.

    Each is opened for reading before the task is created, with a writer of our own held open
    until containerd's shim has opened it (so that reading does not end before the task
    starts); then the task's exit, closing the shim's end, ends the reading.
    """

    def __init__(self, work: Path) -> None:
        self.stdout = str(work / "stdout")
        self.stderr = str(work / "stderr")
        self._readers: dict[int, int] = {}
        self._holders: list[int] = []

    async def __aenter__(self) -> _Output:
        for number, path in ((1, self.stdout), (2, self.stderr)):
            os.mkfifo(path, 0o600)
            self._readers[number] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._holders.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        return self

    def opened(self) -> None:
        """The shim holds the FIFOs now: let their end be the task's."""
        for fd in self._holders:
            os.close(fd)
        self._holders.clear()

    async def pump(self, number: int, dest: ByteSender | None, progress: ProgressSink) -> None:
        fd = self._readers[number]
        while True:
            await anyio.wait_readable(fd)  # type: ignore[arg-type]
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return
            if dest is not None:
                await dest.send(data)
            else:
                progress.log(data, stream=number)

    async def __aexit__(self, *exc: object) -> None:
        self.opened()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
