"""``[worker.oci]``: each exec step is a ``runc run`` of a generated bundle.

The engine hands over a mounted rootfs and materialised mounts; the executor writes the OCI
spec, ``/etc/hosts`` and ``/etc/resolv.conf``, runs the container with its output streamed into
the build's progress (or the caller's streams), and kills it if the build is cancelled.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from llbkit.core.ahead import want
from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins.context import PluginContext
from llbkit.sdk import workerconfig

if TYPE_CHECKING:
    from llbkit.plugins.worker_runc.executor import RuncExecutor

__all__ = ["RuncWorker"]

#: ``[worker.oci]`` keys this worker takes (the engine keeps ``enabled``, ``gc*`` and
#: ``max-parallelism`` for itself); BuildKit's others are accepted, and the engine's config says
#: which have no effect yet
SECTION = "[worker.oci]"
OPTIONS = (
    "platforms",
    "binary",
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
)


class RuncWorker:
    """``llbkit.workers: oci``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        # the executor is imported when a step first runs a process: at a wait on the
        # network before, if the build has one
        want("llbkit.plugins.worker_runc.executor")

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
        platforms = workerconfig.platforms(config, SECTION)
        sandbox = workerconfig.sandbox(config, SECTION)
        labels = {
            "org.mobyproject.buildkit.worker.executor": "oci",
            "org.mobyproject.buildkit.worker.snapshotter": "overlayfs",
            "org.mobyproject.buildkit.worker.hostname": socket.gethostname(),
            "org.mobyproject.buildkit.worker.network": "host",
            "org.mobyproject.buildkit.worker.oci.process-mode": "sandbox",
            "org.mobyproject.buildkit.worker.selinux.enabled": "false",
            **workerconfig.labels(config, SECTION, {}),
        }
        # Imported when a step runs a process: a build whose steps are all cached never does.
        from llbkit.plugins.worker_runc.executor import RuncExecutor

        executor = RuncExecutor(binary, state, platforms, labels, self.ctx.dns, sandbox=sandbox)
        executor.reaped = await executor.reap_orphans()
        return executor

    async def reap(self, config: Mapping[str, object]) -> list[str]:
        """Stop what a killed owner of this state left running; without a container in
        runc's state, nothing is started (so builds that run no process stay cheap)."""
        if self.ctx.state_dir is None:
            return []
        runtime = Path(self.ctx.state_dir) / "runtime"
        if not runtime.is_dir() or not any(p.is_dir() for p in runtime.iterdir()):
            return []
        executor = await self.resolve(config)
        await executor.aclose()
        return executor.reaped
