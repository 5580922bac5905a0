"""The cache-backend conformance kit, run against ``type=registry`` and a real registry."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.plugins.cache_backend import Direction
from llbkit.plugins.cache_registry.backend import RegistryCacheBackend
from llbkit.sdk.testing import CacheBackendKit, make_context
from llbkit.sdk.testing.registry import LocalRegistry

pytestmark = pytest.mark.services


class TestRegistryCacheBackend(CacheBackendKit):
    backend_class = RegistryCacheBackend

    @pytest.fixture(autouse=True)
    def _registry(self, registry: LocalRegistry) -> None:
        self.registry = registry

    def attrs(self, tmp_path: Path) -> Mapping[str, str]:
        return {"ref": f"{self.registry.host}/cache/kit:latest"}

    async def _open(self, tmp_path: Path, direction: Direction) -> Any:
        # The kit's context has no registry access; the engine's own, as a build gets it.
        driver = self.backend_class(make_context("registry", state_dir=tmp_path, registries={}))
        return await driver.resolve(dict(self.attrs(tmp_path)), direction, self.client(tmp_path))
