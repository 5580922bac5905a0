"""The OCI worker: its config, runc's names, and the worker kit (which holds both workers to the
same checks) run on real containers; the spec both workers share is sdk/tests/test_ocispec.py's."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.plugins.worker_runc.executor import RuncExecutor, runc_name
from llbkit.plugins.worker_runc.worker import RuncWorker
from llbkit.sdk.testing import make_context
from llbkit.sdk.testing.kit_worker import WorkerKit, busybox_rootfs


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    worker = RuncWorker(make_context("oci", state_dir=tmp_path))
    with pytest.raises(UserError, match="apt-get install runc"):
        anyio.run(worker.resolve, {"binary": "runc-that-is-not-there"})


def test_container_names_are_what_runc_accepts() -> None:
    names = [runc_name(i) for i in ("sha256:abc/def", "sha256:abc/def", "-x", "..", "", "a" * 300)]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", n) for n in names), names
    assert names[0].startswith("sha256_abc_def-") and names[0] != names[1]
    assert all(len(n) < 100 for n in names)


@pytest.mark.root
class TestRuncWorker(WorkerKit):
    """The worker kit on real runc containers in a busybox rootfs."""

    worker_class = RuncWorker

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _busybox(cls, tmp_path_factory: pytest.TempPathFactory) -> None:
        for tool in ("runc", "busybox"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it as root)")
        cls.rootfs = busybox_rootfs(tmp_path_factory.mktemp("busybox"))

    def leftover_containers(self, executor: RuncExecutor) -> Sequence[str]:
        listed = subprocess.run(
            [executor.binary, "--root", str(executor.root), "list", "-q"],
            check=True,
            capture_output=True,
            text=True,
        )
        return listed.stdout.split()


#: a step's clean-up of runc, cancelled again as it starts (as a stopping daemon cancels what
#: its builds still clean up): it must end, not hang the event loop's shutdown
_CANCELLED_TWICE = """
import asyncio, sys, anyio
from llbkit.plugins.worker_runc.executor import _quiet

async def step():
    try:
        await anyio.sleep(10)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _quiet(["sleep", "0.3"])
        raise

async def main():
    task = asyncio.get_running_loop().create_task(step())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0)  # the clean-up starts; returning cancels it once more

asyncio.run(main())
"""


def test_a_cleanup_cancelled_again_as_it_starts_ends() -> None:
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _CANCELLED_TWICE], capture_output=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
