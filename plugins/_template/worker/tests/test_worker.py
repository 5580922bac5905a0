"""The worker conformance kit, run against this plugin, in real containers when it can.

The kit's process checks need a rootfs with busybox; it is made from a static busybox when
root, runc and busybox are all there (else those checks skip). This worker gives processes no
terminal, standard input or exec, so it declares ``interactive = False`` and the kit skips the
checks of those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.core.plugins import MountSpec, ProcessSpec
from llbkit.plugins.<REPLACE:kind>_<REPLACE:name>.worker import (
    <REPLACE:Name>Executor,
    <REPLACE:Name>Worker,
)
from llbkit.sdk.testing import RecordingProgress, WorkerKit, busybox_rootfs, make_context


def _can_run_containers() -> bool:
    busybox = shutil.which("busybox")
    return (
        os.geteuid() == 0
        and shutil.which("runc") is not None
        and busybox is not None
        and b"ld-linux" not in Path(busybox).read_bytes()[:4096]  # static: runs in any rootfs
    )


class Test<REPLACE:Name>Worker(WorkerKit):
    worker_class = <REPLACE:Name>Worker
    valid_config: ClassVar[Mapping[str, object]] = {"binary": "runc", "gc": True}
    interactive = False

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _rootfs(cls, tmp_path_factory: pytest.TempPathFactory) -> None:
        if _can_run_containers():
            cls.rootfs = busybox_rootfs(tmp_path_factory.mktemp("rootfs"))

    def leftover_containers(self, executor: <REPLACE:Name>Executor) -> list[str]:
        listed = subprocess.run(
            [executor.binary, "--root", str(executor.state / "runtime"), "list", "-q"],
            capture_output=True,
            text=True,
            check=True,
        )
        return listed.stdout.split()


def test_engine_keys_pass_and_a_missing_runtime_is_named(tmp_path: Path) -> None:
    driver = <REPLACE:Name>Worker(make_context("<REPLACE:name>", state_dir=tmp_path))
    with pytest.raises(UserError, match="needs no-such-runtime, which is not installed"):
        anyio.run(driver.resolve, {"gc": True, "max-parallelism": 2, "binary": "no-such-runtime"})


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    busybox = shutil.which("busybox")
    if os.geteuid() != 0 or not shutil.which("runc") or busybox is None:
        pytest.skip("needs root, runc and busybox")
    if b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        pytest.skip("busybox is not static (apt-get install busybox-static)")
    (tmp_path / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(busybox, tmp_path / "rootfs" / "bin" / "busybox")
    for tool in ("sh", "cat", "touch"):
        (tmp_path / "rootfs" / "bin" / tool).symlink_to("busybox")
    return tmp_path / "rootfs"


def test_runs_processes_in_containers(rootfs: Path, tmp_path: Path) -> None:
    class WithRootfs(Test<REPLACE:Name>Worker):
        pass

    WithRootfs.rootfs = rootfs
    WithRootfs().test_runs_a_process_and_reports_its_exit_code(tmp_path / "kit")

    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host\n")
    mounts = [MountSpec("/data", "bind", data, readonly=True), MountSpec("/scratch", "tmpfs")]
    script = "cat /data/in.txt; touch /scratch/ok && touch /data/no"
    progress = RecordingProgress()

    async def scenario() -> int:
        driver = <REPLACE:Name>Worker(make_context("<REPLACE:name>", state_dir=tmp_path / "state"))
        executor = await driver.resolve({})
        try:
            spec = ProcessSpec(args=["/bin/sh", "-c", script], env=["PATH=/bin"])
            return await executor.run("step", spec, rootfs, mounts, progress)
        finally:
            await executor.aclose()

    assert anyio.run(scenario) == 1  # the read-only bind refused the last touch
    out = b"".join(data for stream, data in progress.logs if stream == 1)
    assert out == b"from the host\n"
    assert not (data / "no").exists()
