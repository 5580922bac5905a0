"""The OCI worker: its config, the spec it writes, and the worker kit run on real containers."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins.stdio import ProcessIO
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.plugins.worker_runc.executor import RuncExecutor, runc_name
from llbkit.plugins.worker_runc.worker import RuncWorker
from llbkit.sdk.ocispec import build_process, build_spec
from llbkit.sdk.testing import RecordingProgress, make_context
from llbkit.sdk.testing.kit_worker import WorkerKit, busybox_rootfs


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nbob:x:1000:\nwheel:x:10:bob\ndocker:x:999:alice,bob\n")
    return tmp_path / "rootfs"


def test_spec_runs_as_the_ids_the_engine_resolved(rootfs: Path, tmp_path: Path) -> None:
    # The user's name is for messages: the ids are used as given, whatever /etc/passwd says.
    process = ProcessSpec(["true"], user="bob", uid=4242, gid=4343, additional_gids=(4343, 10))
    spec = build_spec(process, rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r")
    assert spec["process"]["user"] == {"uid": 4242, "gid": 4343, "additionalGids": [4343, 10]}
    root = build_spec(
        ProcessSpec(["true"]), rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r"
    )
    assert root["process"]["user"] == {"uid": 0, "gid": 0}


def test_spec_defaults(rootfs: Path, tmp_path: Path) -> None:
    spec = build_spec(
        ProcessSpec(
            args=["/bin/sh", "-c", "true"],
            user="bob",
            uid=1000,
            gid=1000,
            additional_gids=(1000, 10, 999),
            cwd="/work",
        ),
        rootfs,
        [MountSpec("/cache", "bind", tmp_path), MountSpec("/t", "tmpfs", options={"size": "1024"})],
        hosts=tmp_path / "hosts",
        resolv=tmp_path / "resolv.conf",
    )
    process = spec["process"]
    assert process["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 999]}
    assert process["capabilities"]["bounding"] == [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    assert spec["hostname"] == "buildkitsandbox"
    kinds = {m["destination"]: m["type"] for m in spec["mounts"]}
    assert kinds["/proc"] == "proc" and kinds["/sys"] == "sysfs" and kinds["/t"] == "tmpfs"
    assert kinds["/etc/hosts"] == "bind" and kinds["/cache"] == "bind"
    namespaces = {n["type"] for n in spec["linux"]["namespaces"]}
    assert namespaces == {"pid", "ipc", "uts", "mount"}  # host network without CNI


def test_network_none_and_insecure(rootfs: Path, tmp_path: Path) -> None:
    spec = build_spec(
        ProcessSpec(args=["true"], network="none", security="insecure"),
        rootfs,
        [],
        hosts=tmp_path / "h",
        resolv=tmp_path / "r",
    )
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    assert "ro" not in next(m for m in spec["mounts"] if m["destination"] == "/sys")["options"]


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    worker = RuncWorker(make_context("oci", state_dir=tmp_path))
    with pytest.raises(UnknownOptionError, match="colour"):
        anyio.run(worker.resolve, {"colour": "red"})


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    worker = RuncWorker(make_context("oci", state_dir=tmp_path))
    with pytest.raises(UserError, match="apt-get install runc"):
        anyio.run(worker.resolve, {"binary": "runc-that-is-not-there"})


def test_tty_and_exec_processes(rootfs: Path, tmp_path: Path) -> None:
    process = ProcessSpec(
        ["sh"], env=["A=1"], cwd="/tmp", uid=7, gid=8, tty=True, ulimits=[("nofile", 10, 20)]
    )
    spec = build_spec(process, rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r")
    assert spec["process"]["terminal"] is True
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    # runc exec's process.json is the spec's process, so both processes are set up alike.
    assert build_process(process) == spec["process"]
    assert build_process(ProcessSpec(["true"]))["terminal"] is False


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


@pytest.mark.root
def test_an_id_runs_once_and_exec_waits_for_its_start(tmp_path: Path) -> None:
    if shutil.which("runc") is None or shutil.which("busybox") is None:
        pytest.skip("runc and busybox are needed")
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    worker = RuncWorker(make_context("oci", state_dir=tmp_path / "state"))
    out = RecordingProgress()

    async def scenario() -> int:
        executor = await worker.resolve({})
        async with anyio.create_task_group() as tg:
            first = functools.partial(executor.run, "once", ProcessSpec(["sleep", "60"]), rootfs)
            tg.start_soon(first, [], out)
            await anyio.sleep(0)  # run has begun, the container is not up yet
            with pytest.raises(UserError, match="once is already running"):
                await executor.run("once", ProcessSpec(["true"]), rootfs, [], out)
            # Without io.stdout, an exec's output goes to the log of the container's step.
            code: int = await executor.exec("once", ProcessSpec(["echo", "in-log"]), ProcessIO())
            tg.cancel_scope.cancel()
        return code

    assert anyio.run(scenario) == 0
    assert out.logs == [(1, b"in-log\n")]
