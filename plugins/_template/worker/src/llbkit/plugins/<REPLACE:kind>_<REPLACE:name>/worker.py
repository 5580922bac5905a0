"""An example worker: each process runs in a container that ``runc`` (or a runtime with the same
commands, such as crun) makes from its own default spec: namespaces, a read-only ``/sys``, few
capabilities.

Deliberately small: no terminal, no standard input, no ``exec`` into a running container;
ulimits and cgroup parents are not applied. ``/etc/hosts`` names the step's hostname and its
extra hosts, and ``/etc/resolv.conf`` says what the engine's ``[dns]`` says, as the engine asks.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
from anyio.abc import ByteReceiveStream

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins import (
    DNSConfig,
    MountSpec,
    Platform,
    PluginContext,
    ProcessIO,
    ProcessSpec,
)
from llbkit.core.plugins.progress import ProgressSink
from llbkit.core.plugins.stdio import ByteSender
from llbkit.sdk.ocispec import resolv_conf

OPTIONS = ("binary",)
#: keys of the same config section that the engine reads itself
ENGINE_KEYS = ("enabled", "gc", "gckeepstorage", "gcpolicy", "max-parallelism")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
#: BuildKit's PATH for a process whose environment has none
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IDS = itertools.count()


def _mount(m: MountSpec) -> dict[str, Any]:
    """One mount of the OCI spec; binds serve directories, secret files and agent sockets."""
    if m.kind == "tmpfs":
        size = [f"size={m.options['size']}"] if "size" in m.options else []
        return {"destination": m.dest, "type": "tmpfs", "options": ["nosuid", *size]}
    options = ["rbind", "ro" if m.readonly else "rw"]
    return {"destination": m.dest, "type": "bind", "source": str(m.source), "options": options}


def _hosts(proc: ProcessSpec) -> str:
    """The step's ``/etc/hosts``: localhost under its hostname, then its extra hosts."""
    extra = "".join(f"{ip}\t{host}\n" for host, ip in proc.extra_hosts)
    return f"127.0.0.1\tlocalhost {proc.hostname}\n::1\tlocalhost\n{extra}"


def _configure(
    spec: dict[str, Any], proc: ProcessSpec, rootfs: Path, mounts: Sequence[MountSpec], etc: Path
) -> None:
    """Fill the runtime's default spec in with what the engine asks for."""
    spec["root"] = {"path": str(rootfs), "readonly": proc.readonly_rootfs}
    spec["hostname"] = proc.hostname
    env = list(proc.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    spec["process"].update(terminal=False, args=list(proc.args), env=env, cwd=proc.cwd)
    groups = list(proc.additional_gids)
    spec["process"]["user"] = {"uid": proc.uid, "gid": proc.gid, "additionalGids": groups}
    for name in ("hosts", "resolv.conf"):
        spec["mounts"] += [_mount(MountSpec(f"/etc/{name}", source=etc / name, readonly=True))]
    spec["mounts"] += [_mount(m) for m in mounts]
    if proc.network != "none":  # without CNI, BuildKit's sandbox network is the host's
        namespaces = spec["linux"]["namespaces"]
        spec["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]


async def _pump(out: ByteReceiveStream, to: ByteSender | None, log: ProgressSink, fd: int) -> None:
    async for chunk in out:
        if to is not None:
            await to.send(chunk)
        else:
            log.log(chunk, stream=fd)


class <REPLACE:Name>Executor:
    """Runs processes with one runtime binary; its containers' state lives under ``state``."""

    def __init__(self, name: str, binary: str, state: Path, dns: DNSConfig | None) -> None:
        self.name, self.binary, self.state, self.dns = name, binary, state, dns
        self._running: set[str] = set()

    @property
    def platforms(self) -> Sequence[Platform]:
        return [Platform("linux", _ARCH.get(platform.machine(), platform.machine()))]

    @property
    def labels(self) -> Mapping[str, str]:
        return {"org.mobyproject.buildkit.worker.executor": self.name}

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
        if process.tty or (io is not None and io.stdin is not None):
            raise UserError(f"worker {self.name} gives processes no terminal or standard input")
        if id in self._running:
            raise UserError(f"container {id} is already running in worker {self.name}")
        runtime = [self.binary, "--root", str(self.state / "runtime")]
        container = f"llbkit-{os.getpid()}-{next(_IDS)}"
        bundle = Path(tempfile.mkdtemp(dir=self.state, prefix="bundle-"))
        self._running.add(id)
        try:
            await anyio.run_process([self.binary, "spec", "--bundle", str(bundle)])
            spec = json.loads((bundle / "config.json").read_text())
            (bundle / "hosts").write_text(_hosts(process))
            (bundle / "resolv.conf").write_text(resolv_conf(process.network, dns=self.dns))
            _configure(spec, process, rootfs, mounts, bundle)
            (bundle / "config.json").write_text(json.dumps(spec))
            command = [*runtime, "run", "--bundle", str(bundle), container]
            proc = await anyio.open_process(command, stdin=subprocess.DEVNULL)
            try:
                if started is not None:
                    started()
                assert proc.stdout is not None and proc.stderr is not None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_pump, proc.stdout, io.stdout if io else None, progress, 1)
                    tg.start_soon(_pump, proc.stderr, io.stderr if io else None, progress, 2)
                return await proc.wait()
            except BaseException:
                # Cancelled or failed: the container must not outlive the step. It may not
                # exist yet (runc is still making it), so kill until runc run has ended.
                with anyio.CancelScope(shield=True):
                    while proc.returncode is None:
                        await anyio.run_process([*runtime, "kill", container, "KILL"], check=False)
                        with anyio.move_on_after(0.1):
                            await proc.wait()
                    await anyio.run_process([*runtime, "delete", "-f", container], check=False)
                raise
        finally:
            self._running.discard(id)
            shutil.rmtree(bundle, ignore_errors=True)

    async def exec(self, id: str, process: ProcessSpec, io: ProcessIO) -> int:
        raise UserError(f"worker {self.name} cannot run a second process in container {id!r}")

    async def aclose(self) -> None:
        return None  # run() removes each container before it returns


class <REPLACE:Name>Worker:
    """Constructed once per engine; ``resolve`` runs when the engine first runs a process."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, config: Mapping[str, object]) -> <REPLACE:Name>Executor:
        valid = (*OPTIONS, *ENGINE_KEYS)
        for key in config:
            if key not in valid:
                raise UnknownOptionError(f"worker {self.ctx.name}", key, valid)
        wanted = str(config.get("binary") or "runc")
        binary = shutil.which(wanted)
        if binary is None:
            raise UserError(f"worker {self.ctx.name} needs {wanted}, which is not installed")
        if os.geteuid() != 0:
            raise UserError(f"worker {self.ctx.name} needs root: it runs {wanted} as root")
        state = Path(self.ctx.state_dir or tempfile.mkdtemp(prefix="llbkit-worker-"))
        (state / "runtime").mkdir(parents=True, exist_ok=True)
        return <REPLACE:Name>Executor(self.ctx.name, binary, state, self.ctx.dns)
