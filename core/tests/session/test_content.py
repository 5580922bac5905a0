"""A client's content store over real gRPC: the daemon's ClientDirectory writes and reads
blobs, a write cut short or with the wrong bytes leaves nothing, and only offered stores and
blobs are reachable."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.errors import UserError
from llbkit.core.remote.attachables import exposed_methods, serve_attachables
from llbkit.core.session.caller import Session, SessionClientIO
from llbkit.core.session.content import CONTENT_INFO, SessionContentDirectory


def _name(data: bytes) -> str:
    return "blobs/sha256/" + hashlib.sha256(data).hexdigest()


def _with_store(
    tmp_path: Path, work: Callable[[SessionClientIO, grpc.aio.Channel], Awaitable[None]]
) -> Path:
    """Serve ``tmp_path/cache`` as ``local:<that path>``, run ``work`` as the daemon would."""
    cache = tmp_path / "cache"
    stores = {f"local:{cache}": cache}
    client = EmbeddedClient()
    sock = tmp_path / "s.sock"
    methods = frozenset(m.lower() for m in exposed_methods(client, (), stores))
    assert CONTENT_INFO.lower() in methods

    async def main() -> None:
        with anyio.fail_after(60):
            async with serve_attachables(client, (), str(sock), stores):
                channel = grpc.aio.insecure_channel(f"unix:{sock}")
                try:
                    session = Session("id", "test", "", methods, channel)
                    await work(SessionClientIO(session, scratch=tmp_path), channel)
                finally:
                    await channel.close()

    anyio.run(main)
    return cache


def _leftovers(cache: Path) -> list[str]:
    return [p.name for p in (cache / "blobs" / "sha256").glob(".*")]


def test_blobs_written_through_the_session_land_whole_and_read_back(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    small = b"{}"
    seen: dict[str, Any] = {}

    async def work(io: SessionClientIO, _: Any) -> None:
        directory = io.directory(str(tmp_path / "cache"))
        assert await directory.exists("oci-layout")  # the client keeps the layout itself
        assert not await directory.exists(_name(big))
        for data in (big, small):
            async with directory.write(_name(data)) as out:
                for start in range(0, len(data), 100_000):
                    await out.write(data[start : start + 100_000])
        async with directory.write(_name(small)) as out:  # there already: a no-op
            await out.write(small)
        seen["exists"] = await directory.exists(_name(big))
        async with directory.read(_name(big)) as chunks:
            seen["read"] = b"".join([c async for c in chunks])
        with pytest.raises(KeyError):
            async with directory.read(_name(b"absent")) as chunks:
                [c async for c in chunks]
        with pytest.raises(ValueError):
            await directory.exists("../../etc/passwd")
        await directory.update("index.json", lambda _: b"ignored")  # the client's to write

    cache = _with_store(tmp_path, work)
    assert seen == {"exists": True, "read": big}
    for data in (big, small):
        assert (cache / _name(data)).read_bytes() == data
    assert _leftovers(cache) == []
    assert not (cache / "index.json").exists()


def test_a_write_cut_short_or_with_other_bytes_leaves_nothing(tmp_path: Path) -> None:
    claimed = b"the bytes the name promises"

    async def work(io: SessionClientIO, _: Any) -> None:
        directory = io.directory(str(tmp_path / "cache"))
        with pytest.raises(UserError, match="unexpected commit digest"):
            async with directory.write(_name(claimed)) as out:
                await out.write(b"other bytes")
        with pytest.raises(RuntimeError, match="export broke"):
            async with directory.write(_name(claimed)) as out:
                await out.write(claimed[:5])
                raise RuntimeError("export broke")

    cache = _with_store(tmp_path, work)
    assert not (cache / _name(claimed)).exists()
    assert _leftovers(cache) == []


def test_only_the_offered_store_is_reachable(tmp_path: Path) -> None:
    async def work(io: SessionClientIO, channel: grpc.aio.Channel) -> None:
        other = SessionContentDirectory(channel, "local:/somewhere/else", "/somewhere/else")
        assert not await other.exists(_name(b"x"))  # as BuildKit: an unknown store has nothing
        with pytest.raises(UserError, match="unknown content store"):
            async with other.write(_name(b"x")) as out:
                await out.write(b"x")
        delete = channel.unary_unary("/containerd.services.content.v1.Content/Delete")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await delete(b"\n\x07sha256:", metadata=(("buildkit-attachable-store-id", "x"),))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    _with_store(tmp_path, work)


def test_a_session_without_content_stores_says_what_is_missing(tmp_path: Path) -> None:
    session = Session("id", "test", "", frozenset(), None)  # type: ignore[arg-type]
    io = SessionClientIO(session, scratch=tmp_path)
    with pytest.raises(UserError, match="shares no directory /x"):
        io.directory("/x")


def test_an_oci_layout_output_goes_into_the_clients_export_store(tmp_path: Path) -> None:
    # buildctl's ``--output type=oci,tar=false,dest=DIR`` offers DIR as content store
    # "export" (no FileSend) and writes index.json itself from the build's response.
    import json

    out = tmp_path / "out"
    layer, config = os.urandom(2 << 20), b'{"config":{}}'
    manifest = json.dumps({"layers": [_name(layer)], "config": _name(config)}).encode()
    tree = tmp_path / "layout"
    for data in (layer, config, manifest):
        (tree / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (tree / _name(data)).write_bytes(data)
    (tree / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    top = {"digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest)}
    (tree / "index.json").write_text(json.dumps({"manifests": [top]}))
    stores = {"export": out}
    client = EmbeddedClient()
    sock = tmp_path / "s.sock"
    methods = frozenset(m.lower() for m in exposed_methods(client, (), stores))

    async def main() -> None:
        with anyio.fail_after(60):
            async with serve_attachables(client, (), str(sock), stores):
                channel = grpc.aio.insecure_channel(f"unix:{sock}")
                try:
                    session = Session("id", "test", "", methods, channel)
                    await SessionClientIO(session, scratch=tmp_path).write_tree(
                        "client-output:0", tree
                    )
                finally:
                    await channel.close()

    anyio.run(main)
    for data in (layer, config, manifest):
        assert (out / _name(data)).read_bytes() == data
    assert not (out / "index.json").exists()  # the client's to write, from the response
    assert _leftovers(out) == []
