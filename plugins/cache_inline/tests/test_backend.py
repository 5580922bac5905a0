"""The inline backend's answers; the cache it asks for is tested end to end in tests/."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.plugins.cache_backend import EmbedInImage
from llbkit.plugins.cache_inline.backend import InlineCacheBackend
from llbkit.sdk.testing import MemoryClientIO, make_context


def _backend() -> InlineCacheBackend:
    return InlineCacheBackend(make_context("inline"))


def test_export_asks_the_image_exporters_to_embed_the_cache(tmp_path: Path) -> None:
    opened = anyio.run(_backend().resolve, {}, "export", MemoryClientIO(tmp_path))
    assert opened == EmbedInImage("inline")


def test_import_names_the_way_to_import_an_inline_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"type=registry,ref=<image>"):
        anyio.run(_backend().resolve, {}, "import", MemoryClientIO(tmp_path))


def test_an_attribute_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError, match="ref"):
        anyio.run(_backend().resolve, {"ref": "x"}, "export", MemoryClientIO(tmp_path))
