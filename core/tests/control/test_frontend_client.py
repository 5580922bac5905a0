"""The engine as a frontend sees it: files of solved results, read as gateway's calls read them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.sdk import llb
from llbkit.sdk.testing import kit_frontend_client

#: Go's os.FileMode bit for a directory
GO_DIR = 1 << 31

TREE = (
    llb.scratch()
    .file(
        llb.mkdir("/src", 0o755)
        .mkfile("/src/a.txt", 0o644, b"alpha\n")
        .mkfile("/src/b.md", 0o600, b"beta\n")
        .mkdir("/src/sub", 0o700)
    )
    .marshal()
    .to_bytes()
)


def test_a_solved_result_is_read_listed_and_stated(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, bytes, list[tuple[str, int]], list[str], tuple[int, int]]:
        async with kit_frontend_client(tmp_path, {}) as client:
            ref = await client.solve(TREE)
            whole = await client.read_ref_file(ref, "/src/a.txt")
            part = await client.read_ref_file(ref, "src/a.txt", offset=2, length=3)
            listed = await client.read_dir(ref, "/src")
            texts = await client.read_dir(ref, "/src", include="*.txt")
            one = await client.stat_file(ref, "/src/b.md")
            with pytest.raises(UserError, match="cannot read /src/missing"):
                await client.read_ref_file(ref, "/src/missing")
            return (
                whole,
                part,
                [(s.path, s.mode) for s in listed],
                [s.path for s in texts],
                (one.mode, one.size),
            )

    whole, part, listed, texts, one = anyio.run(main)
    assert (whole, part) == (b"alpha\n", b"pha")
    assert listed == [
        ("a.txt", 0o644),
        ("b.md", 0o600),
        ("sub", GO_DIR | 0o700),
    ]
    assert texts == ["a.txt"]
    assert one == (0o600, 5)


def test_a_frontends_own_step_shows_once_per_name_and_failed_when_it_fails(
    tmp_path: Path,
) -> None:
    """``[internal] load .dockerignore`` read twice (two candidate files) is one step; a step
    whose work fails is shown failed, as BuildKit shows a ``load metadata for`` whose image
    cannot be resolved."""
    from typing import Any

    from llbkit.core.control.frontend_client import EngineFrontendClient
    from llbkit.core.plugins.progress import Vertex, VertexStatus

    events: list[Any] = []
    client = EngineFrontendClient(
        solver=None,  # type: ignore[arg-type]
        session=None,  # type: ignore[arg-type]
        lease=None,  # type: ignore[arg-type]
        emit=events.append,
        images=None,  # type: ignore[arg-type]
        inputs={},
        allow=(),
        tmp=tmp_path,
    )

    async def main() -> None:
        for _ in range(2):
            async with client.step("[internal] load .dockerignore") as step:
                step.status("transferring context:", current=2, done=True)
        with pytest.raises(UserError):
            async with client.step("[internal] load metadata for x"):
                raise UserError("x: not found")

    anyio.run(main)
    failed = [e for e in events if isinstance(e, Vertex) and e.name.endswith("metadata for x")]
    assert [v.error for v in failed] == ["", "x: not found"]  # shown, then failed
    assert failed[-1].completed
    vertices = [e for e in events if isinstance(e, Vertex) and e not in failed]
    assert {v.name for v in vertices} == {"[internal] load .dockerignore"}
    assert len({v.digest for v in vertices}) == 1
    assert len({v.started for v in vertices}) == 1  # the first read's start
    assert vertices[-1].completed
    statuses = [e for e in events if isinstance(e, VertexStatus)]
    assert statuses[0].vertex == vertices[0].digest and statuses[0].current == 2
