"""DiffCopy with many packets to a message (FileSyncBatched): the same trees, few messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.api._pb import fsutil_pb2, packets_pb2
from llbkit.core.session.batched import FLUSH_AT, BatchedPackets, batched_packets
from llbkit.core.session.diffcopy import receive_tree, send_tree
from llbkit.core.session.stream import PeerError

from .helpers import snapshot

Packet = fsutil_pb2.Packet


class Wire:
    """One direction of a call: encoded ``Packets`` messages, counted, then an end."""

    def __init__(self) -> None:
        self.tx, self.rx = anyio.create_memory_object_stream[bytes | None](16)
        self.messages: list[packets_pb2.Packets] = []

    async def write(self, data: bytes) -> None:
        assert isinstance(data, bytes) and len(data) < 2 * FLUSH_AT
        self.messages.append(packets_pb2.Packets.FromString(data))
        await self.tx.send(data)

    async def close(self) -> None:
        await self.tx.send(None)

    async def read(self) -> packets_pb2.Packets | None:
        data = await self.rx.receive()
        return None if data is None else packets_pb2.Packets.FromString(data)

    def packets(self) -> list[Packet]:
        return [p for m in self.messages for p in m.packets]


def transfer(src: Path, dest: Path, **send: Any) -> tuple[Wire, Wire, list[Exception | None]]:
    """Send ``src`` into ``dest`` over batched streams; each side's error, as over a network."""
    up, down = Wire(), Wire()
    errors: list[Exception | None] = [None, None]

    async def side(i: int, out: Wire, inp: Wire, work: Any) -> None:
        try:
            async with batched_packets(out.write, inp.read) as stream:
                await work(stream)
        except Exception as err:
            errors[i] = err
        finally:
            await out.close()

    async def main() -> None:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(side, 0, up, down, lambda s: send_tree(s, src, **send))
                group.start_soon(side, 1, down, up, lambda s: receive_tree(s, dest))

    anyio.run(main)
    return up, down, errors


def _tree(root: Path, files: int, size: int = 100) -> None:
    for n in range(files):
        sub = root / f"d{n // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n:04d}").write_bytes(os.urandom(size))
    os.symlink("d00/f0000", root / "link")


def test_a_tree_arrives_whole_in_few_messages(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src, 2000)
    up, down, errors = transfer(src, dest)
    assert errors == [None, None]
    assert snapshot(dest) == snapshot(src)
    sent = up.packets()
    stats = [p for p in sent if p.type == Packet.PACKET_STAT]
    assert len(stats) == 2000 + 20 + 1 + 1  # files, folders, the link, the closing stat
    assert len(up.messages) < len(sent) / 20
    requests = [p for p in down.packets() if p.type == Packet.PACKET_REQ]
    assert len(requests) == 2000  # every file the first time (a link's target is its stat)

    # Nothing changed: stats go one way, no request, nothing but FIN comes back.
    up, down, errors = transfer(src, dest)
    assert errors == [None, None]
    assert [p.type for p in down.packets()] == [Packet.PACKET_FIN]
    # One file changed: exactly it is asked for and sent.
    (src / "d07/f0700").write_bytes(b"changed")
    up, down, errors = transfer(src, dest)
    assert errors == [None, None]
    asked = [p.ID for p in down.packets() if p.type == Packet.PACKET_REQ]
    stat_paths = [p.stat.path for p in up.packets() if p.type == Packet.PACKET_STAT]
    assert [stat_paths[i] for i in asked] == ["d07/f0700"]
    assert (dest / "d07/f0700").read_bytes() == b"changed"


def test_large_files_keep_fsutil_chunks_and_every_message_stays_small(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "small").write_text("x")
    up, _, errors = transfer(src, dest)
    assert errors == [None, None]
    assert (dest / "big").read_bytes() == (src / "big").read_bytes()
    data = [p for p in up.packets() if p.type == Packet.PACKET_DATA and p.data]
    assert max(len(p.data) for p in data) == 32 * 1024
    assert all(len(m.SerializeToString()) < FLUSH_AT + 64 * 1024 for m in up.messages)


def test_an_error_from_the_sender_reaches_the_receiver(tmp_path: Path) -> None:
    _, _, (sent, received) = transfer(tmp_path / "missing", tmp_path / "dest")
    assert sent is not None and "No such file or directory" in str(sent)
    assert isinstance(received, PeerError) and received.message == str(sent)


def test_a_lone_request_is_sent_without_waiting_for_more() -> None:
    """A side that sends one packet and then waits for the answer must not deadlock."""
    up, down = Wire(), Wire()

    async def main() -> None:
        with anyio.fail_after(5):
            async with (
                batched_packets(up.write, down.read) as a,
                batched_packets(down.write, up.read) as b,
            ):
                await a.send(Packet(type=Packet.PACKET_REQ, ID=7))
                got = await b.recv()
                assert got is not None and got.ID == 7
                await b.send(Packet(type=Packet.PACKET_FIN))
                got = await a.recv()
                assert got is not None and got.type == Packet.PACKET_FIN

    anyio.run(main)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70000])
def test_the_encoding_is_a_packets_message(size: int) -> None:
    sent: list[bytes] = []

    async def write(data: bytes) -> None:
        sent.append(data)

    async def main() -> None:
        stream = BatchedPackets(write, lambda: None)  # type: ignore[arg-type, return-value]
        packet = Packet(type=Packet.PACKET_DATA, ID=3, data=b"z" * size)
        await stream.send(packet)
        await stream.send(Packet(type=Packet.PACKET_FIN))
        await stream.flush()

    anyio.run(main)
    (message,) = sent
    decoded = packets_pb2.Packets.FromString(message).packets
    assert [p.type for p in decoded] == [Packet.PACKET_DATA, Packet.PACKET_FIN]
    assert decoded[0].data == b"z" * size
