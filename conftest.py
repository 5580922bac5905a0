"""Repository-wide pytest policy: tests marked ``root`` skip, with the reason, when not root."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (mounts, namespaces); run the suite as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A busybox image (from the host's busybox-static) in a real registry on loopback."""
    import shutil

    for tool in ("docker-registry", "runc", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it as root)")
    from llbkit.sdk.testing.registry import (
        LocalRegistry,
        busybox_layer,
        push_image,
        push_rich_base,
    )

    with LocalRegistry(tmp_path_factory.mktemp("busybox-registry")) as registry:
        push_image(registry.host, "library/busybox:latest", [busybox_layer()])
        push_rich_base(registry.host)
        yield f"{registry.host}/library/busybox"


@pytest.fixture(scope="session", autouse=True)
def _plugin_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the entry-point index the tests' processes write out of the user's home."""
    os.environ.setdefault("LLBKIT_PLUGIN_CACHE", str(tmp_path_factory.mktemp("plugin-index")))
