"""Syntax newer than BuildKit v0.11.6's stable channel: ``COPY --exclude``, ``ADD --checksum``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from llbkit.core.cache.store import Store
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.engine import Engine, ExportRequest
from llbkit.core.errors import UserError
from llbkit.core.plugins.registry import PluginRegistry
from tests.dockerfiles.compare import serve


def build(ctx: Path, root: Path, out: Path, **opts: str) -> None:
    engine = Engine(Store.open(root), EngineConfig(), PluginRegistry.from_env())
    try:
        anyio.run(
            lambda: engine.build(
                None,
                EmbeddedClient(locals={"context": ctx, "dockerfile": ctx}),
                frontend="dockerfile.v0",
                frontend_opts=opts,
                exports=[ExportRequest("local", {"dest": str(out)})],
            )
        )
    finally:
        engine.close()


def test_copy_exclude(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for name in ("keep.py", "skip.pyc", "notes.md"):
        (ctx / "src" / name).write_text(name)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY --exclude=*.pyc --exclude=*.md src/ /app/\n"
    )
    build(ctx, tmp_path / "root", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "app").iterdir()) == ["keep.py"]


def test_add_checksum(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "tool").write_bytes(b"payload\n")
    good = "sha256:" + hashlib.sha256(b"payload\n").hexdigest()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with serve(served) as base:
        (ctx / "Dockerfile").write_text(
            f"FROM scratch\nARG SUM\nADD --checksum=$SUM {base}/tool /bin/tool\n"
        )
        build(ctx, tmp_path / "root", tmp_path / "out", **{"build-arg:SUM": good})
        assert (tmp_path / "out" / "bin" / "tool").read_bytes() == b"payload\n"
        bad = "sha256:" + "0" * 64
        with pytest.raises(UserError, match="digest mismatch"):
            build(ctx, tmp_path / "root2", tmp_path / "out2", **{"build-arg:SUM": bad})
