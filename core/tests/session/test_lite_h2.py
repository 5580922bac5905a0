"""The light client's HTTP/2 and gRPC framing, both ends ours, over a socket pair: calls keep
their bytes and order through flow control, and every way a call ends reaches the caller."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llbkit.core.remote.lite import h2
from llbkit.core.remote.lite.rpc import NOT_FOUND, UNIMPLEMENTED, UNKNOWN, Call, RpcError


def _echo(call: Call, metadata: dict[str, list[str]]) -> None:
    for message in call.messages():
        call.send(message[::-1])


def _refuse(call: Call, metadata: dict[str, list[str]]) -> None:
    raise RpcError(NOT_FOUND, "no access allowed to dir 'ctx' — 100%", {})


def _broken(call: Call, metadata: dict[str, list[str]]) -> None:
    raise KeyError("a bug")


HANDLERS = {"/t.T/Echo": _echo, "/t.T/Refuse": _refuse, "/t.T/Broken": _broken}


@pytest.fixture
def pair(lite_connected: Any) -> Iterator[tuple[h2.Connection, h2.Connection]]:
    """A client connection to a server of :data:`HANDLERS` over a socket pair."""
    with lite_connected(HANDLERS) as (client, server, _):
        yield client, server


@pytest.fixture(params=[h2.WINDOW, 1 << 16], ids=["large-windows", "small-windows"])
def window(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small windows: every few frames a side waits for the other's credit.
    monkeypatch.setattr(h2, "WINDOW", request.param)


@pytest.fixture
def conn(window: None, pair: tuple[h2.Connection, h2.Connection]) -> h2.Connection:
    return pair[0]


def test_large_messages_cross_both_ways_in_order_beyond_the_default_windows(
    conn: h2.Connection,
) -> None:
    call = Call.start(conn, "/t.T/Echo")
    sent = [os.urandom(size) for size in (0, 1, 70_000, 3 << 20, 5)]

    def send() -> None:
        for message in sent:
            call.send(message)
        call.done_writing()

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(call.messages()), daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), "the call stalled: a window was never given back"
    assert got == [m[::-1] for m in sent]


def test_an_error_status_reaches_the_caller_with_its_message(conn: h2.Connection) -> None:
    call = Call.start(conn, "/t.T/Refuse")
    call.send(b"", end=True)
    with pytest.raises(RpcError) as raised:
        call.unary()
    assert raised.value.code == NOT_FOUND
    assert raised.value.message == "no access allowed to dir 'ctx' — 100%"


def test_an_unknown_method_and_a_failing_handler_end_their_calls(conn: h2.Connection) -> None:
    unknown = Call.start(conn, "/t.T/Nothing")
    unknown.send(b"", end=True)
    with pytest.raises(RpcError) as raised:
        unknown.unary()
    assert raised.value.code == UNIMPLEMENTED
    broken = Call.start(conn, "/t.T/Broken")
    broken.send(b"", end=True)
    with pytest.raises(RpcError) as raised:
        broken.unary()
    assert raised.value.code == UNKNOWN and "a bug" in raised.value.message


def test_a_peer_that_goes_away_ends_a_waiting_call() -> None:
    ours, theirs = socket.socketpair()
    client = h2.Connection(lambda: ours.recv(1 << 16), ours.sendall)
    call = Call.start(client, "/t.T/Echo")
    theirs.close()
    with pytest.raises(RpcError):
        list(call.messages())
    assert client.closed is not None
    ours.close()


def test_calls_the_peer_still_serves_after_goaway_finish_and_no_new_one_starts(
    pair: tuple[h2.Connection, h2.Connection],
) -> None:
    """As a daemon stopping gracefully says GOAWAY: the running build goes on."""
    client, server = pair
    running = Call.start(client, "/t.T/Echo")
    server.write_frame(h2.GOAWAY, 0, 0, struct.pack(">II", running.stream.id, 0))
    deadline = time.monotonic() + 10
    while client.going_away is None and time.monotonic() < deadline:
        time.sleep(0.01)
    running.send(b"still", end=True)
    assert list(running.messages()) == [b"llits"]
    with pytest.raises(h2.H2Error):
        Call.start(client, "/t.T/Echo")


def test_data_goes_out_in_frames_of_the_peers_size_but_in_one_write() -> None:
    """Through a session every write is a message of the stream carrying the connection: what
    the windows allow leaves in one write, cut in frames no larger than the peer takes."""
    writes: list[bytes] = []
    quiet = threading.Event()

    def nothing() -> bytes:  # a peer that says nothing until the test is done
        quiet.wait()
        return b""

    conn = h2.Connection(nothing, writes.append)
    writes.clear()  # the connection's preface
    conn._peer_frame = 16_384
    conn._peer_window = 1 << 20
    stream = h2.Stream(conn, 1, 1 << 20)
    conn.streams[1] = stream
    data = os.urandom(100_000)
    conn.send_data(stream, data, end=True)
    quiet.set()
    assert len(writes) == 1
    frames, pos, got = [], 0, b""
    while pos < len(writes[0]):
        length = int.from_bytes(writes[0][pos : pos + 3], "big")
        kind, flags = writes[0][pos + 3], writes[0][pos + 4]
        frames.append((length, kind, flags))
        got += writes[0][pos + 9 : pos + 9 + length]
        pos += 9 + length
    assert got == data and all(kind == h2.DATA for _, kind, _ in frames)
    assert max(length for length, _, _ in frames) == 16_384 and len(frames) == 7
    assert [flags & h2.END_STREAM for _, _, flags in frames] == [0] * 6 + [h2.END_STREAM]


def test_a_writer_held_up_on_the_socket_never_holds_up_the_reader() -> None:
    """A writer stuck on a full socket holds the write lock while the reader owes the peer a
    PING's ACK: the reader goes on reading (a call's data still arrives), and the ACK leaves
    as the writer lets go. A reader that waited for the lock could wedge both ends, with a peer
    that reads again only once it has its ACK or its window credit."""
    frames: list[bytes] = []
    arrived = threading.Condition()
    in_write, let_go = threading.Event(), threading.Event()
    writes: list[bytes] = []

    def read() -> bytes:
        with arrived:
            arrived.wait_for(lambda: frames, timeout=30)
            return frames.pop(0) if frames else b""

    def write(data: bytes) -> None:
        if in_write.is_set() is False and b"held" in data:
            in_write.set()
            let_go.wait(30)
        writes.append(data)

    conn = h2.Connection(read, write)
    conn._peer_window = 1 << 20
    stream = h2.Stream(conn, 1, 1 << 20)
    conn.streams[1] = stream
    writer = threading.Thread(target=conn.send_data, args=(stream, b"held"), daemon=True)
    writer.start()
    assert in_write.wait(10)
    with arrived:
        frames.append(h2._frame(h2.PING, 0, 0, b"12345678"))
        frames.append(h2._frame(h2.DATA, h2.END_STREAM, 1, b"meanwhile"))
        arrived.notify_all()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read()), daemon=True)
    reader.start()
    reader.join(10)
    held = writer.is_alive()
    let_go.set()
    writer.join(10)
    assert got == [b"meanwhile"] and held, "the reader waited for the writer"
    assert h2._frame(h2.PING, h2.ACK, 0, b"12345678") in b"".join(writes[-2:])
