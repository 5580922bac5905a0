"""The light client's session services over a socket pair: an output is whole or absent, and
a receiver that fails answers instead of waiting for a sender that waits for it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.errors import UserError
from llbkit.core.fs.archivefile import Held
from llbkit.core.remote.lite import h2, messages
from llbkit.core.remote.lite.rpc import Call, RpcError
from llbkit.core.remote.lite.session import handlers
from llbkit.core.session.methods import EXPORTER_ID, FILE_SEND

#: Go's os.ModeDir
GO_DIR = 0x80000000


@pytest.fixture
def outputs(tmp_path: Path) -> list[tuple[str, bool] | None]:
    return [(str(tmp_path / "out" / "a.tar"), False), (str(tmp_path / "tree"), True)]


@pytest.fixture
def held() -> Held:
    return Held(set())


@pytest.fixture
def pair(
    outputs: list[tuple[str, bool] | None], lite_connected: Any, held: Held
) -> Iterator[tuple[h2.Connection, socket.socket]]:
    with lite_connected(handlers({}, {}, outputs, held)) as (client, _, ours):
        yield client, ours


def _until(check: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("built", [True, False])
def test_an_archive_lands_whole_once_its_build_succeeds(
    pair: tuple[h2.Connection, socket.socket], tmp_path: Path, held: Held, built: bool
) -> None:
    """BuildKit's daemon ends an output's stream as if complete when its exporter fails
    midway: the archive is placed only once the Solve succeeds, and dropped if it fails."""
    client, _ = pair
    dest = tmp_path / "out" / "a.tar"
    dest.parent.mkdir()
    dest.write_bytes(b"the last build's")
    call = Call.start(client, FILE_SEND, [(EXPORTER_ID, "0")])
    for chunk in (b"a" * 1000, b"b" * 1000):
        call.send(messages.bytes_message(chunk))
    call.done_writing()
    assert list(call.messages()) == []
    assert dest.read_bytes() == b"the last build's"  # held until the build's answer
    if built:
        held.place(UserError)
        assert dest.read_bytes() == b"a" * 1000 + b"b" * 1000
    else:
        held.discard()
        assert dest.read_bytes() == b"the last build's"
    assert os.listdir(tmp_path / "out") == ["a.tar"]
    assert held.partial == set()


def test_an_archive_that_ends_after_its_build_is_removed(
    pair: tuple[h2.Connection, socket.socket], tmp_path: Path, held: Held
) -> None:
    """A daemon that answers Solve before an output's stream ends: the build is over (here
    failed), so the archive that comes whole after it is not kept for a later build."""
    client, _ = pair
    held.discard()
    call = Call.start(client, FILE_SEND, [(EXPORTER_ID, "0")])
    call.send(messages.bytes_message(b"a" * 1000))
    call.done_writing()
    assert list(call.messages()) == []
    assert os.listdir(tmp_path / "out") == []
    assert held.files == [] and held.partial == set()


def test_an_archive_cut_with_the_connection_leaves_nothing(
    pair: tuple[h2.Connection, socket.socket], tmp_path: Path
) -> None:
    """A daemon killed mid-export: neither a short ``dest`` nor its temporary file stays."""
    client, ours = pair
    call = Call.start(client, FILE_SEND, [(EXPORTER_ID, "0")])
    call.send(messages.bytes_message(b"a" * 5000))
    out = tmp_path / "out"
    _until(lambda: out.is_dir() and os.listdir(out))  # the handler is writing
    ours.shutdown(socket.SHUT_RDWR)
    _until(lambda: not os.listdir(out))
    time.sleep(0.2)
    assert not os.listdir(out)


def test_a_receiver_that_cannot_apply_an_entry_answers_with_an_error(
    pair: tuple[h2.Connection, socket.socket],
) -> None:
    """The sender waits for the receiver's word; a failing receiver must say it, not wait."""
    client, _ = pair
    call = Call.start(client, FILE_SEND, [(EXPORTER_ID, "1")])
    too_long = "x" * 300  # no file system takes a name this long
    call.send(messages.packet(messages.PACKET_STAT, messages.stat(too_long, GO_DIR | 0o755)))
    call.send(messages.packet(messages.PACKET_STAT))
    said: list[object] = []

    def listen() -> None:
        try:
            said.extend(call.messages())
        except RpcError as err:
            said.append(err)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listener.join(15)
    assert not listener.is_alive(), "the receiver never answered"
    assert isinstance(said[-1], RpcError) and "name too long" in said[-1].message.lower()


def test_a_call_that_cannot_be_answered_is_reset_not_left_waiting(
    lite_connected: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler whose stream fails midway (its status cannot be sent) resets the call: the
    daemon's receive ends with an error instead of waiting for packets forever."""
    from llbkit.core.remote.lite.rpc import abandon

    streams: list[h2.Stream] = []
    release = threading.Event()

    def stuck(call: Call, _: dict[str, list[str]]) -> None:
        streams.append(call.stream)
        release.wait(10)

    with lite_connected({"/x.X/Y": stuck}) as (client, _, _):
        call = Call.start(client, "/x.X/Y")
        call.send(b"hello")
        _until(lambda: streams)
        abandon(streams[0], "/x.X/Y", h2.H2Error("a write failed"))
        with pytest.raises(RpcError) as err:
            list(call.messages())
        assert err.value.code == 1  # CANCELLED: the call ends for the caller
        assert "the daemon's call /x.X/Y failed: a write failed" in capsys.readouterr().err
        abandon(streams[0], "/x.X/Y", h2.H2Error("again"))  # reset already: said once
        assert capsys.readouterr().err == ""
        release.set()
