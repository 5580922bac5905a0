"""A local context's key after a change: summed again only where the sync changed something,
and always the key a cold build of the same tree gets, through either client."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.sources.local import parse_local


@asynccontextmanager
async def _client(kind: str, src: Path, scratch: Path) -> AsyncIterator[Any]:
    client = EmbeddedClient(locals={"ctx": src})
    if kind == "embedded":
        yield client
        return
    from llbkit.core.remote.attachables import exposed_methods, serve_attachables
    from llbkit.core.session.caller import Session, SessionClientIO

    sock = scratch / "s.sock"
    async with serve_attachables(client, (), str(sock)):
        channel = grpc.aio.insecure_channel(f"unix:{sock}")
        try:
            offered = frozenset(m.lower() for m in exposed_methods(client, ()))
            yield SessionClientIO(Session("id", "test", "key", offered, channel), scratch=scratch)
        finally:
            await channel.close()


def _key(kind: str, src: Path, state: Path, scratch: Path) -> str:
    job = replace(parse_local("local://ctx", {}, None), state_dir=state)

    async def main() -> str:
        async with _client(kind, src, scratch) as client:
            try:
                return await job.cache_key(client)
            finally:
                job.discard()  # as the solver lets go of the vertex when the build ends

    return anyio.run(main)


def _edits(src: Path) -> list[tuple[str, Callable[[], object]]]:
    def replace_dir_by_file() -> None:
        shutil.rmtree(src / "d2")
        (src / "d2").write_text("now a file")

    def replace_file_by_dir() -> None:
        (src / "top").unlink()
        (src / "top").mkdir()
        (src / "top" / "inner").write_text("inner")

    def dir_again() -> None:
        (src / "d2").unlink()
        (src / "d2").mkdir()
        (src / "d2" / "f2").write_text("again")

    def retarget() -> None:
        (src / "link").unlink()
        os.symlink("d1/f3", src / "link")

    return [
        ("one file rewritten", lambda: (src / "d0" / "f0").write_bytes(os.urandom(64))),
        ("a file's mode", lambda: (src / "d1" / "f1").chmod(0o600)),
        ("a directory's mode", lambda: (src / "d3").chmod(0o700)),
        ("a new directory", lambda: (src / "new" / "deeper").mkdir(parents=True)),
        ("a file in it", lambda: (src / "new" / "deeper" / "x").write_text("x")),
        ("a directory removed", lambda: shutil.rmtree(src / "new")),
        ("a directory replaced by a file", replace_dir_by_file),
        ("a file replaced by a directory", replace_file_by_dir),
        ("a symlink retargeted", retarget),
        ("a file removed", (src / "d4" / "f4").unlink),
        ("a directory where one was replaced", dir_again),
    ]


@pytest.mark.parametrize("kind", ["embedded", "session"])
def test_a_change_after_a_cached_key_gives_the_cold_key(tmp_path: Path, kind: str) -> None:
    src, state = tmp_path / "src", tmp_path / "state"
    for n in range(60):
        (src / f"d{n % 6}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 6}" / f"f{n}").write_bytes(os.urandom(n))
    (src / "top").write_text("top")
    os.symlink("d0/f0", src / "link")
    keys = [_key(kind, src, state, tmp_path)]
    for what, edit in _edits(src):
        edit()
        warm = _key(kind, src, state, tmp_path)
        cold_state = tmp_path / f"cold-{len(keys)}"
        assert warm == _key(kind, src, cold_state, tmp_path), what
        shutil.rmtree(cold_state)
        assert warm != keys[-1], what
        keys.append(warm)


def test_only_what_changed_is_looked_at_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, state = tmp_path / "src", tmp_path / "state"
    for n in range(200):
        (src / f"d{n % 10}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 10}" / f"f{n}").write_text(str(n))
    _key("embedded", src, state, tmp_path)
    from llbkit.core.fs import contenthash

    looked: list[int] = []
    real = contenthash._header

    def counting(st: os.stat_result, *args: Any) -> bytes:
        looked.append(st.st_ino)
        return real(st, *args)

    monkeypatch.setattr(contenthash, "_header", counting)
    _key("embedded", src, state, tmp_path)
    assert looked == []  # nothing changed: the last checksum stands
    (src / "d3" / "f13").write_text("thirteen")
    _key("embedded", src, state, tmp_path)
    # The root, the changed file's directory and the file: not the other 9 directories' files.
    assert len(looked) == 3
