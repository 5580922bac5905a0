"""Containers run by one runtime binary with a state directory of its own.

Each :meth:`RuncExecutor.run` is a foreground ``runc run`` of a generated bundle; the container
is known by the caller's id for as long as it runs, so :meth:`RuncExecutor.exec` can add a
process to it with ``runc exec``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from llbkit.core.errors import UserError
from llbkit.plugins.worker_runc._call import call_runc, wait_for_file
from llbkit.sdk.ocispec import Sandbox, build_process, build_spec, hosts_file, resolv_conf

if TYPE_CHECKING:
    from llbkit.core.plugins.context import DNSConfig, Platform
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.stdio import ProcessIO
    from llbkit.core.plugins.worker import MountSpec, ProcessSpec

__all__ = ["RuncExecutor"]

_IDS = itertools.count()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def runc_name(id: str) -> str:
    """A runc container name for ``id``: letters, digits, ``_``, ``.`` and ``-``, not starting
    with a dot or a dash, as runc accepts; the suffix keeps it unique when ids sanitize alike or
    a crashed engine left a container behind."""
    safe = _UNSAFE.sub("_", id)[:64].lstrip(".-") or "llbkit"
    return f"{safe}-{os.getpid()}-{next(_IDS)}"


@dataclass
class _Container:
    name: str
    log: ProgressSink
    #: written by runc once the first process runs
    pidfile: Path
    ended: anyio.Event = field(default_factory=anyio.Event)


class RuncExecutor:
    """Runs processes with one runtime binary and a state directory of its own."""

    def __init__(
        self,
        binary: str,
        state: Path,
        platforms: Sequence[Platform],
        labels: Mapping[str, str],
        dns: DNSConfig | None = None,
        *,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.binary = binary
        self.dns = dns
        self.sandbox = sandbox or Sandbox()
        self.state = state
        self._platforms = list(platforms)
        self._labels = dict(labels)
        self._containers: dict[str, _Container] = {}
        #: the containers a killed owner of this state left running, stopped at the start
        self.reaped: list[str] = []

    @property
    def platforms(self) -> Sequence[Platform]:
        return self._platforms

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

    @property
    def root(self) -> Path:
        """runc's ``--root``: where it keeps the state of this executor's containers."""
        return self.state / "runtime"

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
        if id in self._containers:
            raise UserError(f"container {id} is already running in the OCI worker")
        bundle = Path(tempfile.mkdtemp(dir=self.state / "executor"))
        container = _Container(runc_name(id), progress, bundle / "pid")
        self._containers[id] = container
        try:
            hosts = bundle / "hosts"
            hosts.write_text(hosts_file(process))
            resolv = bundle / "resolv.conf"
            resolv.write_text(resolv_conf(process.network, dns=self.dns))
            spec = build_spec(
                process,
                rootfs,
                mounts,
                hosts=hosts,
                resolv=resolv,
                id=container.name,
                sandbox=self.sandbox,
            )
            (bundle / "config.json").write_text(json.dumps(spec))
            command = [
                *self._runc("run", log=bundle / "runc-log.json"),
                "--bundle",
                str(bundle),
                "--pid-file",
                str(container.pidfile),
                "--no-new-keyring",
                container.name,
            ]
            try:
                return await call_runc(
                    command,
                    tty=process.tty,
                    io=io,
                    log=progress,
                    pidfile=container.pidfile,
                    on_start=started,
                )
            except BaseException:
                # runc deletes what it ran; this is for a runc that died before it could.
                with anyio.CancelScope(shield=True):
                    await _quiet([*self._runc("delete"), "-f", container.name])
                raise
        finally:
            del self._containers[id]
            container.ended.set()  # an exec waiting for the start learns it will not come
            shutil.rmtree(bundle, ignore_errors=True)

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        container = self._containers.get(id)
        if container is None:
            raise UserError(
                f"no container {id} is running in the OCI worker; exec needs one started by run"
            )
        if not await wait_for_file(container.pidfile, unless=container.ended):
            raise UserError(f"container {id} ended before the exec could start")
        work = Path(tempfile.mkdtemp(dir=self.state / "executor"))
        try:
            (work / "process.json").write_text(json.dumps(build_process(process)))
            command = [
                *self._runc("exec", log=work / "runc-log.json"),
                "--process",
                str(work / "process.json"),
                "--pid-file",
                str(work / "pid"),
                container.name,
            ]
            return await call_runc(
                command,
                tty=process.tty,
                io=io,
                log=container.log,
                pidfile=work / "pid",
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def aclose(self) -> None:
        # Killing a container's first process ends it; its run() then returns and cleans up.
        for container in self._containers.values():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # not running
                os.kill(int(container.pidfile.read_text()), signal.SIGKILL)

    async def reap_orphans(self) -> list[str]:
        """Kill and delete the containers a previous owner of this state left running (a
        process killed with SIGKILL cannot stop its steps): only one process owns a state root,
        so every container of this runc root that this executor did not start is an orphan.
        runc keeps each container's state in a folder of its root named after it: read here,
        as ``runc list`` reads it, without starting runc when nothing is left."""
        try:
            listed = [p.name for p in self.root.iterdir() if (p / "state.json").is_file()]
        except FileNotFoundError:  # runc never ran here
            listed = []
        ours = {c.name for c in self._containers.values()}
        orphans = [name for name in sorted(listed) if name not in ours]
        for name in orphans:
            await _quiet([*self._runc("kill"), name, "KILL"])
            await _quiet([*self._runc("delete"), "--force", name])
        for bundle in (self.state / "executor").iterdir():
            shutil.rmtree(bundle, ignore_errors=True)
        return orphans

    def _runc(self, action: str, *, log: Path | None = None) -> list[str]:
        """runc's command line. With ``log``, runc's own log goes to that file, as BuildKit
        runs it: its standard error then carries the process's output and, if runc fails,
        its error alone (``runc run failed: …``), not a log record around it."""
        logging = ["--log", str(log), "--log-format", "json"] if log is not None else []
        return [self.binary, "--root", str(self.root), *logging, action]


async def _quiet(command: list[str]) -> None:
    """A runc clean-up, its output dropped. Run from a thread: these run as a step is being
    cancelled, and a second cancellation (a daemon stopping) reaching asyncio's creation of a
    subprocess leaves it waiting forever for the child it killed; a thread finishes its runc
    however the task ends."""

    def run() -> None:
        with contextlib.suppress(OSError):  # no runtime at all: nothing can be left to delete
            dropped = subprocess.DEVNULL
            subprocess.run(command, stdout=dropped, stderr=dropped, check=False)

    await anyio.to_thread.run_sync(run)
