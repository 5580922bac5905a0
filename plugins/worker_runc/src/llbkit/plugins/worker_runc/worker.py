"""``[worker.oci]``: each exec step is a ``runc run`` of a generated bundle.

The engine hands over a mounted rootfs and materialised mounts; this worker writes the OCI spec,
``/etc/hosts`` and ``/etc/resolv.conf``, runs the container with its output streamed into the
build's progress, and kills it if the build is cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
from anyio.abc import ByteReceiveStream

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins.context import Platform, PluginContext
from llbkit.core.plugins.progress import ProgressSink
from llbkit.core.plugins.stdio import ProcessIO
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.plugins.worker_runc.spec import build_spec

__all__ = ["RuncExecutor", "RuncWorker"]

OPTIONS = (
    "enabled",
    "platforms",
    "binary",
    "max-parallelism",
    "gc",
    "gckeepstorage",
    "gcpolicy",
    "labels",
    "snapshotter",
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
    "gcreservedspace",
    "gcmaxusedspace",
    "gcminfreespace",
)
_IDS = itertools.count()


def _host_resolv(network: str) -> str:
    """The host's resolv.conf, without loopback nameservers unless the host network is used."""
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        text = ""
    if network == "host":
        return text
    kept = [
        line
        for line in text.splitlines()
        if not (
            line.startswith("nameserver")
            and line.split()[1:2]
            and line.split()[1].startswith(("127.", "::1"))
        )
    ]
    if not any(line.startswith("nameserver") for line in kept):
        kept += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(kept) + "\n"


class RuncExecutor:
    """Runs processes with one runtime binary and a state directory of its own."""

    def __init__(
        self, binary: str, state: Path, platforms: Sequence[Platform], labels: Mapping[str, str]
    ) -> None:
        self.binary = binary
        self.state = state
        self._platforms = list(platforms)
        self._labels = dict(labels)

    @property
    def platforms(self) -> Sequence[Platform]:
        return self._platforms

    @property
    def labels(self) -> Mapping[str, str]:
        return self._labels

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
        bundle = Path(tempfile.mkdtemp(dir=self.state / "executor"))
        name = f"llbkit-{os.getpid()}-{next(_IDS)}"
        try:
            hosts = bundle / "hosts"
            hosts.write_text(
                f"127.0.0.1\tlocalhost {process.hostname}\n::1\tlocalhost ip6-localhost "
                "ip6-loopback\n" + "".join(f"{ip}\t{host}\n" for host, ip in process.extra_hosts)
            )
            resolv = bundle / "resolv.conf"
            resolv.write_text(_host_resolv(process.network))
            spec = build_spec(process, rootfs, mounts, hosts=hosts, resolv=resolv)
            (bundle / "config.json").write_text(json.dumps(spec))
            return await self._run(bundle, name, progress)
        finally:
            shutil.rmtree(bundle, ignore_errors=True)

    async def _run(self, bundle: Path, name: str, progress: ProgressSink) -> int:
        command = [
            self.binary,
            "--root",
            str(self.state / "runtime"),
            "run",
            "--bundle",
            str(bundle),
            "--no-new-keyring",
            name,
        ]
        proc = await anyio.open_process(command, stdin=None)
        try:
            async with anyio.create_task_group() as tg:
                assert proc.stdout is not None and proc.stderr is not None
                tg.start_soon(_pump, proc.stdout, progress, 1)
                tg.start_soon(_pump, proc.stderr, progress, 2)
            return await proc.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _quiet(
                    [self.binary, "--root", str(self.state / "runtime"), "kill", name, "KILL"]
                )
                await proc.wait()
                await _quiet(
                    [self.binary, "--root", str(self.state / "runtime"), "delete", "-f", name]
                )
            raise

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        raise UserError(f"no container {id!r} is running")

    async def aclose(self) -> None:
        return None


async def _pump(stream: ByteReceiveStream, progress: ProgressSink, number: int) -> None:
    async for chunk in stream:
        progress.log(chunk, stream=number)


async def _quiet(command: list[str]) -> None:
    with contextlib.suppress(OSError):
        await anyio.run_process(command, check=False)


class RuncWorker:
    """``llbkit.workers: oci``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, config: Mapping[str, object]) -> RuncExecutor:
        for key in config:
            if key not in OPTIONS:
                raise UnknownOptionError("[worker.oci]", key, OPTIONS)
        wanted = str(config.get("binary") or "")
        candidates = [wanted] if wanted else ["buildkit-runc", "runc"]
        binary = next((shutil.which(c) for c in candidates if shutil.which(c)), None)
        if binary is None:
            hint = (
                "apt-get install runc" if not wanted or "runc" in wanted else (f"install {wanted}")
            )
            raise UserError(
                f"the OCI worker needs {wanted or 'runc'}, which is not installed ({hint}, or "
                "set [worker.oci] binary)"
            )
        if os.geteuid() != 0:
            raise UserError("the OCI worker needs root (rootless builds are not in this release)")
        state = Path(self.ctx.state_dir or tempfile.mkdtemp(prefix="llbkit-runc-"))
        (state / "executor").mkdir(parents=True, exist_ok=True)
        (state / "runtime").mkdir(parents=True, exist_ok=True)
        platforms = [_platform(p) for p in _strings(config, "platforms")] or [Platform()]
        labels = {
            "org.mobyproject.buildkit.worker.executor": "oci",
            "org.mobyproject.buildkit.worker.snapshotter": "overlayfs",
            "org.mobyproject.buildkit.worker.hostname": socket.gethostname(),
            "org.mobyproject.buildkit.worker.network": "host",
            "org.mobyproject.buildkit.worker.oci.process-mode": "sandbox",
            "org.mobyproject.buildkit.worker.selinux.enabled": "false",
        }
        extra = config.get("labels") or {}
        if not isinstance(extra, dict):
            raise ConfigError("[worker.oci] labels must be a table")
        labels.update({str(k): str(v) for k, v in extra.items()})
        return RuncExecutor(binary, state, platforms, labels)


def _strings(config: Mapping[str, object], key: str) -> list[str]:
    value: Any = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[worker.oci] {key} must be a list of strings")
    return list(value)


def _platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"[worker.oci] platforms: {text!r} is not os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
