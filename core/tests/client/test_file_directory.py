"""``FileDirectory``: the client directory a driver such as ``type=local`` keeps files in.

What a driver relies on: names never leave the directory, a file appears whole or not at all,
a missing one is a KeyError, and concurrent updates, from two processes too, lose nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from llbkit.core.client.directory import FileDirectory
from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.errors import UserError
from llbkit.core.plugins import ClientDirectory, ClientIO


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


async def read(directory: FileDirectory, name: str) -> bytes:
    async with directory.read(name) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def write(directory: FileDirectory, name: str, *parts: bytes) -> None:
    async with directory.write(name) as out:
        for part in parts:
            await out.write(part)


def test_it_is_what_the_contract_asks() -> None:
    directory: ClientDirectory = FileDirectory(Path("."))
    client: ClientIO = EmbeddedClient()
    assert isinstance(directory, FileDirectory)
    assert isinstance(client.directory("/some/where"), FileDirectory)


def test_the_embedded_client_opens_the_path_itself(tmp_path: Path) -> None:
    client = EmbeddedClient()
    anyio.run(write, client.directory(str(tmp_path / "cache")), "a/b", b"x")
    assert (tmp_path / "cache/a/b").read_bytes() == b"x"


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "..", "../x", "a/../../x", "a/./b", "a//b", "a/", "."]
)
def test_a_name_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    directory = FileDirectory(tmp_path / "root")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="not a relative path inside the directory"):
            await directory.exists(name)
        with pytest.raises(ValueError, match="not a relative path inside the directory"):
            await read(directory, name)
        with pytest.raises(ValueError, match="not a relative path inside the directory"):
            await write(directory, name, b"x")
        with pytest.raises(ValueError, match="not a relative path inside the directory"):
            await directory.update(name, lambda current: b"x")

    anyio.run(scenario)
    assert not (tmp_path / "root").exists()
    assert files(tmp_path) == []


def test_a_file_is_written_read_back_in_chunks_and_exists(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path / "root")
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB

    async def scenario() -> list[bytes]:
        assert not await directory.exists("blobs/sha256/abc")
        await write(directory, "blobs/sha256/abc", data[:1000], data[1000:])
        assert await directory.exists("blobs/sha256/abc")
        assert not await directory.exists("blobs/sha256"), "a directory is not a file"
        async with directory.read("blobs/sha256/abc") as chunks:
            return [chunk async for chunk in chunks]

    read_back = anyio.run(scenario)
    assert b"".join(read_back) == data
    assert [len(c) for c in read_back] == [1 << 20, 1 << 20, len(data) - (2 << 20)]
    assert files(tmp_path / "root") == ["blobs/sha256/abc"], "no temporary file is left"


def test_a_missing_file_is_a_key_error_and_creates_nothing(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path / "root")
    with pytest.raises(KeyError, match=r"'index\.json'"):
        anyio.run(read, directory, "index.json")
    assert not anyio.run(directory.exists, "index.json")
    assert not (tmp_path / "root").exists()


def test_a_block_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path / "root")

    async def scenario() -> None:
        async with directory.write("blobs/sha256/abc") as out:
            await out.write(b"half")
            raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        anyio.run(scenario)
    assert files(tmp_path / "root") == [], "not even a temporary file"


def test_a_cancelled_block_leaves_nothing_behind(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path / "root")

    async def scenario() -> None:
        with anyio.move_on_after(0.1):
            async with directory.write("f") as out:
                await out.write(b"half")
                await anyio.sleep(10)

    anyio.run(scenario)
    assert files(tmp_path / "root") == []


def test_a_reader_sees_the_old_file_until_the_new_one_is_whole(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path)

    async def scenario() -> tuple[bytes, bytes]:
        await write(directory, "index.json", b"old")
        async with directory.write("index.json") as out:
            await out.write(b"ne")
            during = await read(directory, "index.json")
            await out.write(b"w")
        return during, await read(directory, "index.json")

    assert anyio.run(scenario) == (b"old", b"new")
    assert files(tmp_path) == ["index.json"]


def test_update_hands_change_the_current_bytes_or_none(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path / "root")
    seen: list[bytes | None] = []

    def change(current: bytes | None) -> bytes:
        seen.append(current)
        return (current or b"") + b"+"

    async def scenario() -> bytes:
        await directory.update("sub/index.json", change)
        await directory.update("sub/index.json", change)
        return await read(directory, "sub/index.json")

    assert anyio.run(scenario) == b"++"
    assert seen == [None, b"+"]
    assert files(tmp_path / "root") == ["sub/index.json", "sub/index.json.lock"]


def test_a_change_that_raises_keeps_the_file(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path)
    (tmp_path / "index.json").write_bytes(b"kept")

    def broken(current: bytes | None) -> bytes:
        raise UserError("index.json is not JSON")

    with pytest.raises(UserError, match="not JSON"):
        anyio.run(directory.update, "index.json", broken)
    assert (tmp_path / "index.json").read_bytes() == b"kept"
    assert files(tmp_path) == ["index.json", "index.json.lock"]


def _append(item: str) -> Callable[[bytes | None], bytes]:
    def change(current: bytes | None) -> bytes:
        return json.dumps([*json.loads(current or b"[]"), item]).encode()

    return change


def test_concurrent_updates_in_one_process_lose_nothing(tmp_path: Path) -> None:
    directory = FileDirectory(tmp_path)

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(directory.update, "list.json", _append(str(n)))

    anyio.run(scenario)
    assert sorted(json.loads((tmp_path / "list.json").read_bytes()), key=int) == [
        str(n) for n in range(20)
    ]


def test_updates_from_two_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        import anyio
        from llbkit.core.client.directory import FileDirectory

        def append(item):
            def change(current):
                items = json.loads(current) if current is not None else []
                time.sleep(0.002)  # widen the window a lost update would need
                return json.dumps([*items, item]).encode()
            return change

        async def main(root, who):
            directory = FileDirectory(Path(root))
            for n in range(50):
                await directory.update("list.json", append(f"{who}{n}"))

        anyio.run(main, sys.argv[1], sys.argv[2])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), w]) for w in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    items = json.loads((tmp_path / "list.json").read_bytes())
    assert sorted(items) == sorted(f"{who}{n}" for who in "ab" for n in range(50))
    assert files(tmp_path) == ["list.json", "list.json.lock"]


def test_a_directory_that_cannot_be_written_is_the_users_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    directory = FileDirectory(tmp_path / "file")
    blob, index = (re.escape(str(tmp_path / "file" / name)) for name in ("blobs/x", "i"))
    with pytest.raises(UserError, match=rf"^cannot write {blob}: Not a directory$"):
        anyio.run(write, directory, "blobs/x", b"x")
    with pytest.raises(UserError, match=rf"^cannot write {index}: File exists$"):
        anyio.run(directory.update, "i", lambda current: b"x")
    with pytest.raises(UserError, match=rf"^cannot read {index}: Not a directory$"):
        anyio.run(read, directory, "i")
