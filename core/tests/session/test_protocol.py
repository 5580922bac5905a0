"""The DiffCopy protocol against misbehaving or failing peers: hostile listings refused before
anything lands outside ``dest``, unknown ids, early FIN or close, and errors the peer reports."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llbkit.core.api._pb import fsutil_pb2
from llbkit.core.session import gomode
from llbkit.core.session.diffcopy import (
    DiffCopyError,
    InvalidStreamError,
    MemoryPacketStream,
    PeerError,
    receive_tree,
    send_tree,
)

from .helpers import run_pair, snapshot, sync

Packet = fsutil_pb2.Packet
Stat = fsutil_pb2.Stat
DIR = gomode.MODE_DIR | 0o755
FILE = 0o644


def stat_packet(path: str, mode: int = FILE, **fields: object) -> fsutil_pb2.Packet:
    return Packet(type=Packet.PACKET_STAT, stat=Stat(path=path, mode=mode, **fields))  # type: ignore[arg-type]


END = Packet(type=Packet.PACKET_STAT)


def fake_side(
    packets: Sequence[fsutil_pb2.Packet], got: list[fsutil_pb2.Packet], *, hang_up: bool = False
) -> Callable[[MemoryPacketStream], object]:
    """A peer that sends ``packets``, then records what it is told until the stream ends (or,
    with ``hang_up``, closes at once)."""

    async def side(stream: MemoryPacketStream) -> None:
        for packet in packets:
            await stream.send(packet)
        while not hang_up and (packet := await stream.recv()) is not None:
            got.append(packet)
            if packet.type in (Packet.PACKET_ERR, Packet.PACKET_FIN):
                return

    return side  # type: ignore[return-value]


def receive_from(
    packets: Sequence[fsutil_pb2.Packet], dest: Path, *, hang_up: bool = False
) -> list[fsutil_pb2.Packet]:
    """Feed ``packets`` to a receiver; return what it sent back. Its error is raised."""
    got: list[fsutil_pb2.Packet] = []
    fake_error, error = run_pair(
        fake_side(packets, got, hang_up=hang_up),  # type: ignore[arg-type]
        lambda s: receive_tree(s, dest),
    )
    assert fake_error is None
    if error is not None:
        error.got = got  # type: ignore[attr-defined]
        raise error
    return got


HOSTILE = {
    "parent escape": ([stat_packet("../x")], "escapes the destination"),
    "escape through a dir": ([stat_packet("a", DIR), stat_packet("a/../../x")], "unclean path"),
    "dotdot": ([stat_packet("..", DIR)], "escapes the destination"),
    "dot": ([stat_packet(".", DIR)], "escapes the destination"),
    "absolute": ([stat_packet("/etc/cron.d/x")], "absolute path"),
    "empty": ([stat_packet("")], "invalid path"),
    "nul": ([stat_packet("a\0b")], "invalid path"),
    "unclean": ([stat_packet("a", DIR), stat_packet("a//b")], "unclean path"),
    "dot slash": ([stat_packet("./a")], "unclean path"),
    "unsorted": ([stat_packet("b"), stat_packet("a")], "out of order: 'a' after 'b'"),
    "duplicate": ([stat_packet("a"), stat_packet("a")], "out of order"),
    "child without its dir": ([stat_packet("a/x")], "out of order"),
    "child of a file": ([stat_packet("a"), stat_packet("a/x")], "out of order"),
    "dir listed after its child": (
        [stat_packet("a", DIR), stat_packet("a/x"), stat_packet("a", DIR)],
        "out of order",
    ),
    "child of a symlink": (
        [stat_packet("a", gomode.MODE_SYMLINK | 0o777, linkname="/"), stat_packet("a/x")],
        "out of order",
    ),
    "hardlink outside": (
        [stat_packet("h", linkname="../../etc/passwd")],
        "invalid link 'h'",
    ),
    "nul in a link target": (
        [stat_packet("s", gomode.MODE_SYMLINK | 0o777, linkname="a\0b")],
        "invalid link target",
    ),
    "device numbers out of range": (
        [stat_packet("dev", gomode.MODE_NAMED_PIPE | 0o644, devmajor=1 << 40)],
        "invalid stat for 'dev'",
    ),
    "hardlink to a dir": (
        [stat_packet("d", DIR), stat_packet("h", linkname="d")],
        "invalid link 'h' to 'd'",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_listing_is_refused_and_nothing_escapes(tmp_path: Path, case: str) -> None:
    packets, message = HOSTILE[case]
    dest = tmp_path / "deep/dest"
    dest.mkdir(parents=True)
    (tmp_path / "canary").write_text("untouched")
    before = snapshot(tmp_path)
    with pytest.raises(InvalidStreamError, match=message) as info:
        receive_from([*packets, END], dest)
    assert "\n" not in str(info.value)
    # the sender was told why
    errs = [p for p in info.value.got if p.type == Packet.PACKET_ERR]  # type: ignore[attr-defined]
    assert [e.data.decode() for e in errs] == [str(info.value)]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("deep")} == {
        k: v for k, v in before.items() if not k.startswith("deep")
    }


def test_a_symlink_left_in_dest_is_replaced_not_followed(tmp_path: Path) -> None:
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    (src / "a").mkdir(parents=True)
    (src / "a/x").write_text("belongs in dest")
    outside.mkdir()
    dest.mkdir()
    os.symlink(outside, dest / "a")  # what an earlier, different sync left
    sync(src, dest)
    assert list(outside.iterdir()) == []
    assert (dest / "a").is_dir() and not (dest / "a").is_symlink()
    assert (dest / "a/x").read_text() == "belongs in dest"


def test_data_for_a_file_never_requested_is_refused(tmp_path: Path) -> None:
    packets = [
        stat_packet("f"),
        END,
        Packet(type=Packet.PACKET_DATA, ID=7, data=b"unasked"),
    ]
    with pytest.raises(InvalidStreamError, match="invalid file request 7"):
        receive_from(packets, tmp_path / "dest")


def test_a_sender_finishing_first_is_refused(tmp_path: Path) -> None:
    packets = [stat_packet("f"), END, Packet(type=Packet.PACKET_FIN)]
    with pytest.raises(InvalidStreamError, match="sender finished before the receiver"):
        receive_from(packets, tmp_path / "dest")


def test_a_sender_closing_early_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DiffCopyError, match="closed the stream before finishing"):
        receive_from([stat_packet("f")], tmp_path / "dest", hang_up=True)


def test_an_error_from_the_sender_is_raised_with_its_message(tmp_path: Path) -> None:
    packets = [stat_packet("f"), Packet(type=Packet.PACKET_ERR, data=b"permission denied: f")]
    with pytest.raises(PeerError) as info:
        receive_from(packets, tmp_path / "dest")
    assert info.value.message == "permission denied: f"
    assert str(info.value) == "error from sender: permission denied: f"
    assert info.value.got == []  # type: ignore[attr-defined]  # not echoed back


def test_a_sender_failing_after_the_requests_leaves_no_file_behind(tmp_path: Path) -> None:
    """The receiver makes each requested file's temporary as it asks for it: a sender that
    fails before any data comes leaves neither those nor a half of the tree in ``dest``."""
    names = [f"d/f{n:02d}" for n in range(40)]
    dest = tmp_path / "dest"
    asked: list[int] = []

    async def sender(stream: MemoryPacketStream) -> None:
        for packet in [stat_packet("d", DIR), *map(stat_packet, names), END]:
            await stream.send(packet)
        while len(asked) < len(names):
            packet = await stream.recv()
            assert packet is not None and packet.type == Packet.PACKET_REQ
            asked.append(packet.ID)
        await stream.send(Packet(type=Packet.PACKET_ERR, data=b"disk on fire"))

    fake_error, error = run_pair(sender, lambda s: receive_tree(s, dest))  # type: ignore[arg-type]
    assert fake_error is None and isinstance(error, PeerError), (fake_error, error)
    assert sorted(asked) == list(range(1, len(names) + 1))
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*")] == ["d"]


def send_to(packets: Sequence[fsutil_pb2.Packet], root: Path) -> list[fsutil_pb2.Packet]:
    """Run a sender against a fake receiver that sends ``packets`` up front."""
    got: list[fsutil_pb2.Packet] = []

    async def receiver(stream: MemoryPacketStream) -> None:
        for packet in packets:
            await stream.send(packet)
        while (packet := await stream.recv()) is not None:
            got.append(packet)
            if packet.type in (Packet.PACKET_ERR, Packet.PACKET_FIN):
                return

    error, fake_error = run_pair(lambda s: send_tree(s, root), receiver)
    assert fake_error is None
    if error is not None:
        error.got = got  # type: ignore[attr-defined]
        raise error
    return got


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("data")
    return root


def test_an_error_from_the_receiver_is_raised_with_its_message(small_tree: Path) -> None:
    with pytest.raises(PeerError, match=r"^error from receiver: no space left on device$"):
        send_to([Packet(type=Packet.PACKET_ERR, data=b"no space left on device")], small_tree)


@pytest.mark.parametrize(
    ("requests", "bad"),
    [([12345], 12345), ([0], 0), ([1, 1], 1)],
    ids=["unknown", "a directory", "twice"],
)
def test_requests_for_what_cannot_be_requested_are_refused(
    small_tree: Path, requests: list[int], bad: int
) -> None:
    packets = [Packet(type=Packet.PACKET_REQ, ID=i) for i in requests]
    with pytest.raises(InvalidStreamError, match=f"^invalid file id {bad}$") as info:
        send_to(packets, small_tree)
    assert [p.data for p in info.value.got if p.type == Packet.PACKET_ERR] == [  # type: ignore[attr-defined]
        f"invalid file id {bad}".encode()
    ]


def test_a_receiver_closing_early_is_an_error(small_tree: Path) -> None:
    async def receiver(stream: MemoryPacketStream) -> None:
        await stream.recv()

    error, _ = run_pair(lambda s: send_tree(s, small_tree), receiver)
    assert isinstance(error, DiffCopyError)
    assert str(error) == "the receiver closed the stream before finishing"


def test_a_sender_that_cannot_read_its_root_tells_the_receiver(tmp_path: Path) -> None:
    sent, received = run_pair(
        lambda s: send_tree(s, tmp_path / "missing"),
        lambda s: receive_tree(s, tmp_path / "dest"),
    )
    assert type(sent) is DiffCopyError
    assert str(sent) == f"cannot send {tmp_path / 'missing'}: No such file or directory"
    assert isinstance(received, PeerError)
    assert received.message == str(sent)
