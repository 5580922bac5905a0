"""The worker conformance kit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from llbkit.core.errors import UnknownOptionError
from llbkit.core.plugins import worker
from llbkit.sdk.testing._doubles import make_context
from llbkit.sdk.testing._kit_helpers import BOGUS_KEY, assert_names_key, check_api_version, run

__all__ = ["WorkerKit"]


class WorkerKit:
    """Checks for a worker. Set ``worker_class`` and ``valid_config``; set ``rootfs`` (a
    directory with ``/bin/sh``) to also run processes."""

    worker_class: ClassVar[type]
    valid_config: ClassVar[Mapping[str, object]] = {}
    rootfs: ClassVar[Path | None] = None

    def test_declares_contract_version(self) -> None:
        check_api_version(self.worker_class, worker.API_VERSION)

    def test_rejects_unknown_config_key_by_name(self, tmp_path: Path) -> None:
        driver = self.worker_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            run(driver.resolve({**self.valid_config, BOGUS_KEY: "1"}))
        assert_names_key(err)

    def test_runs_a_process_and_reports_its_exit_code(self, tmp_path: Path) -> None:
        if self.rootfs is None:
            pytest.skip("no rootfs given to the kit")
        from llbkit.core.plugins.worker import ProcessSpec
        from llbkit.sdk.testing._doubles import RecordingProgress

        driver = self.worker_class(make_context("kit", state_dir=tmp_path))
        progress = RecordingProgress()

        async def scenario() -> int:
            executor = await driver.resolve(dict(self.valid_config))
            try:
                spec = ProcessSpec(args=["/bin/sh", "-c", "echo kit-out; exit 3"])
                code: int = await executor.run("kit", spec, self.rootfs, [], progress)
                return code
            finally:
                await executor.aclose()

        assert run(scenario()) == 3
        assert b"kit-out" in b"".join(data for _, data in progress.logs)
