"""What every conformance kit shares."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from llbkit.core.errors import UnknownOptionError

T = TypeVar("T")

BOGUS_KEY = "llbkit-conformance-no-such-option"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion, as the engine would await it."""
    return asyncio.run(coro)


def check_api_version(factory: Any, version: int) -> None:
    declared = getattr(factory, "api_version", None)
    assert declared == version, (
        f"{factory!r} declares api_version={declared!r}, contract is v{version}"
    )


def assert_names_key(err: pytest.ExceptionInfo[UnknownOptionError]) -> None:
    assert BOGUS_KEY in str(err.value), f"the message does not name the unknown key: {err.value}"
    assert "\n" not in str(err.value), "a user error must be one line"
