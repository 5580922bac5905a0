"""The containerd worker against a real containerd: the worker kit (which holds both workers to
the same checks), its config, leftovers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.core.plugins.worker import ProcessSpec
from llbkit.plugins.worker_containerd.executor import OWNER_LABEL
from llbkit.plugins.worker_containerd.worker import ContainerdWorker
from llbkit.sdk.testing import RecordingProgress, make_context
from llbkit.sdk.testing.containerd import Containerd, containerd  # noqa: F401 - a fixture
from llbkit.sdk.testing.kit_worker import WorkerKit, busybox_rootfs

pytestmark = pytest.mark.root


class TestContainerdWorker(WorkerKit):
    worker_class = ContainerdWorker
    interactive = False
    server: Containerd

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _setup(cls, containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> None:  # noqa: F811
        cls.server = containerd
        cls.valid_config = {"address": containerd.address, "namespace": containerd.namespace}
        cls.rootfs = busybox_rootfs(tmp_path_factory.mktemp("rootfs"))

    def leftover_containers(self, executor: Any) -> Sequence[str] | None:
        listed = self.server.ctr("containers", "ls", "-q")
        return [line for line in listed.stdout.split() if line.startswith("kit-")]


def _resolve(tmp_path: Path, config: dict[str, object]) -> Any:
    async def main() -> Any:
        worker = ContainerdWorker(make_context("t", state_dir=tmp_path / "state"))
        executor = await worker.resolve(config)
        await executor.aclose()
        return executor

    return anyio.run(main)


def test_an_unreachable_containerd_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        _resolve(tmp_path, {"address": str(tmp_path / "nothing.sock")})
    text = str(err.value)
    assert text.startswith(f"containerd at {tmp_path / 'nothing.sock'} is not reachable")
    assert "start containerd" in text and "\n" not in text


def test_containers_a_killed_engine_left_are_removed_at_the_next_start(
    containerd: Containerd,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = {"address": containerd.address, "namespace": containerd.namespace}
    state = tmp_path / "state"
    rootfs = busybox_rootfs(tmp_path / "rootfs")

    async def leave_one() -> str:
        """Start a step, then drop the executor without cleaning up, as a kill -9 would."""
        worker = ContainerdWorker(make_context("t", state_dir=state))
        executor = await worker.resolve(config)
        running = anyio.Event()
        async with anyio.create_task_group() as group:

            async def step() -> None:
                await executor.run(
                    "orphan",
                    ProcessSpec(["sleep", "600"]),
                    rootfs,
                    [],
                    RecordingProgress(),
                    started=running.set,
                )

            group.start_soon(step)
            await running.wait()
            names = await executor.containers()
            # The crash: nothing is killed or removed.
            executor._remove = executor._kill = _nothing  # type: ignore[method-assign]
            group.cancel_scope.cancel()
        await executor.channel.close()
        return names[0]

    name = anyio.run(leave_one)
    assert "RUNNING" in containerd.ctr("tasks", "ls").stdout
    listed = json.loads(containerd.ctr("containers", "info", name).stdout)
    assert listed["Labels"][OWNER_LABEL]
    executor = _resolve(tmp_path, config)  # same state root: the same owner
    assert name not in containerd.ctr("containers", "ls", "-q").stdout.split()
    assert name not in containerd.ctr("tasks", "ls").stdout
    assert executor.owner == listed["Labels"][OWNER_LABEL]


async def _nothing(name: str) -> None:
    return None
