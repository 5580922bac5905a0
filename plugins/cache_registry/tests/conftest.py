"""A real registry on loopback (Debian's ``docker-registry``) for this plugin's tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.sdk.testing.registry import LocalRegistry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry that wants ``tester:right`` (basic auth, as ``docker login`` stores it)."""
    if shutil.which("htpasswd") is None or shutil.which("docker-registry") is None:
        pytest.skip("htpasswd or docker-registry is not installed")
    htpasswd = tmp_path / "htpasswd"
    made = subprocess.run(["htpasswd", "-Bbn", "tester", "right"], capture_output=True, check=True)
    htpasswd.write_bytes(made.stdout)
    with LocalRegistry(tmp_path / "private", htpasswd=htpasswd) as running:
        yield running
