"""Shared by the gha backend's tests."""

from __future__ import annotations

import pytest

#: what a GitHub Actions runner sets; the backend reads it as buildctl does
RUNNER_ENV = (
    "ACTIONS_CACHE_URL",
    "ACTIONS_RESULTS_URL",
    "ACTIONS_CACHE_SERVICE_V2",
    "ACTIONS_RUNTIME_TOKEN",
)


@pytest.fixture(autouse=True)
def _no_runner_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run inside GitHub Actions must not pick up the runner's own cache service
    (``$ACTIONS_CACHE_SERVICE_V2`` would turn a v1 test's url= into its results URL)."""
    for name in RUNNER_ENV:
        monkeypatch.delenv(name, raising=False)
