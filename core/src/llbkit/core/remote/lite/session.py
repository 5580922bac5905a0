"""The services a build's session offers the daemon, served on threads: health, registry
credentials from this machine's Docker config, ``--secret`` values, the ``--local``
directories by fsutil's DiffCopy, and archives (``tar``, ``oci``, ``docker``) sent back."""

from __future__ import annotations

import contextlib
import os
import stat as statmod
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence

from llbkit.core.fs.archivefile import TERMINAL, Held, archive_file
from llbkit.core.remote.lite import messages
from llbkit.core.remote.lite.h2 import H2Error
from llbkit.core.remote.lite.rpc import NOT_FOUND, UNKNOWN, Call, Handler, RpcError, abandon
from llbkit.core.session import gomode
from llbkit.core.session.errors import describe
from llbkit.core.session.methods import (
    AUTH,
    BATCHED_FILE_SEND,
    BATCHED_FILE_SYNC,
    CHUNK_SIZE,
    EXPORTER_ID,
    FILE_SEND,
    FILE_SYNC,
    FLUSH_AT,
    HEALTH,
    SECRETS,
)

__all__ = ["PARTIAL", "discard_partial", "handlers", "methods", "warm_up"]


def methods(
    locals_: Mapping[str, str], outputs: Sequence[tuple[str, bool] | None] = ()
) -> list[str]:
    found = [HEALTH, SECRETS, AUTH]
    if locals_:
        found += [FILE_SYNC, BATCHED_FILE_SYNC]
    if any(output is not None for output in outputs):
        found.append(FILE_SEND)
    if any(output is not None and output[1] for output in outputs):
        found.append(BATCHED_FILE_SEND)
    return found


def warm_up(locals_: Mapping[str, str]) -> None:
    """Import what the daemon's first calls will need (the walker for ``--local``, the
    credentials reader) on a thread while this process waits for the daemon, rather than
    when each call comes: through a warm daemon that is a twentieth of a build."""
    thread = threading.Thread(target=_imports, args=(bool(locals_),), daemon=True)
    thread.start()
    _warming[:] = [*(t for t in _warming if t.is_alive()), thread]


_warming: list[threading.Thread] = []


def _imports(walking: bool) -> None:
    # A failure here is the call's own to report, when it imports the module itself.
    with contextlib.suppress(Exception):
        if walking:
            import llbkit.core.session.walker
        import llbkit.core.registry.credentials  # noqa: F401


def _warmed() -> None:
    """The warm-up's imports done before a call's own (they are the same modules)."""
    for thread in _warming:
        thread.join()


def handlers(
    locals_: Mapping[str, str],
    secrets: Mapping[str, bytes] | None = None,
    outputs: Sequence[tuple[str, bool] | None] = (),
    held: Held | None = None,
) -> dict[str, Handler]:
    """The services; ``outputs[i]`` is where exporter ``i``'s output lands here: (a file, or
    ``-`` for standard output, or a directory; whether it is one), None for an exporter whose
    result stays with the daemon. Archives received whole wait in ``held`` (the build's) for
    it to succeed; without one they are placed as they end."""
    known = dict(secrets or {})
    return {
        HEALTH: lambda call, _: call.send(messages.health_serving()),
        AUTH: _credentials,
        SECRETS: lambda call, _: _secret(call, known),
        FILE_SYNC: lambda call, md: _diff_copy(call, md, locals_, batched=False),
        BATCHED_FILE_SYNC: lambda call, md: _diff_copy(call, md, locals_, batched=True),
        FILE_SEND: lambda call, md: _file_send(call, md, outputs, held, batched=False),
        BATCHED_FILE_SEND: lambda call, md: _file_send(call, md, outputs, held, batched=True),
    }


def _credentials(call: Call, metadata: dict[str, list[str]]) -> None:
    _warmed()
    from llbkit.core.registry.credentials import docker_config_credentials

    host = messages.credentials_host(call.unary())
    found = docker_config_credentials(host)
    call.send(messages.credentials_response(*(found or ("", ""))))


def _secret(call: Call, known: Mapping[str, bytes]) -> None:
    """A ``--secret``'s bytes, from this process's memory only."""
    name = messages.secret_id(call.unary())
    if name not in known:
        raise RpcError(NOT_FOUND, f"secret {name} not found", {})
    call.send(messages.secret_response(known[name]))


def _file_send(
    call: Call,
    metadata: dict[str, list[str]],
    outputs: Sequence[tuple[str, bool] | None],
    held: Held | None,
    *,
    batched: bool,
) -> None:
    """An exporter's output: an archive written as it arrives, into a new file renamed over
    ``dest`` once the build succeeds (a failed build leaves no half file: ``held``) or to
    standard output; or a tree,
    received by fsutil's protocol into a directory."""
    asked = (metadata.get(EXPORTER_ID) or ["0"])[0]
    output = outputs[int(asked)] if asked.isdigit() and int(asked) < len(outputs) else None
    if output is None or (batched and not output[1]):
        raise RpcError(NOT_FOUND, f"exporter {asked} not found", {})
    dest, directory = output
    if directory:
        _receive_tree(call, dest, batched=batched)
        return
    if dest == "-":
        out = sys.stdout.buffer
        if out.isatty():
            raise RpcError(UNKNOWN, TERMINAL, {})
        try:
            for message in call.messages():
                out.write(messages.bytes_message_data(message))
            out.flush()
        except OSError as err:  # the reader of our output went away
            raise RpcError(UNKNOWN, f"-: {err.strerror}", {}) from None
        return
    try:
        with archive_file(dest, _unknown, PARTIAL, held) as stream:
            for message in call.messages():
                stream.write(messages.bytes_message_data(message))
    except OSError as err:  # writing the file
        raise RpcError(UNKNOWN, f"cannot write {dest}: {err.strerror}", {}) from None


def _unknown(said: str) -> RpcError:
    return RpcError(UNKNOWN, said, {})


#: archives being written, and a directory output's temporary files: a process that leaves
#: before they are whole (Ctrl-C) removes them
PARTIAL: set[str] = set()


def discard_partial() -> None:
    """Remove the outputs' files not yet whole (their threads never get to)."""
    for path in list(PARTIAL):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _receive_tree(call: Call, dest: str, *, batched: bool) -> None:
    """A directory output, as the full client receives it (its receiver, on an event loop of
    this call's own: only a build that asks for a tree pays for importing it), owned by whoever
    runs the client as buildctl's is."""
    from pathlib import Path

    import anyio

    from llbkit.core.api._pb import fsutil_pb2
    from llbkit.core.errors import UserError
    from llbkit.core.session.batched import batched_packets
    from llbkit.core.session.diffcopy_receive import receive_tree

    incoming = call.messages()

    def next_message() -> bytes | None:
        return next(incoming, None)

    async def read() -> bytes | None:
        # Abandoned when the receiver fails: the sender, waiting for our word, sends nothing.
        return await anyio.to_thread.run_sync(next_message, abandon_on_cancel=True)

    async def write(data: bytes) -> None:
        await anyio.to_thread.run_sync(call.send, data)

    class Packets:
        """One fsutil packet per message (BuildKit's FileSend)."""

        async def send(self, packet: fsutil_pb2.Packet) -> None:
            await write(packet.SerializeToString())

        async def recv(self) -> fsutil_pb2.Packet | None:
            data = await read()
            return None if data is None else fsutil_pb2.Packet.FromString(data)

    def ours(path: str, stat: fsutil_pb2.Stat) -> bool:
        stat.uid, stat.gid = os.getuid(), os.getgid()
        return True

    async def receive() -> None:
        from llbkit.core.api._pb import packets_pb2

        target = os.path.abspath(dest)
        os.makedirs(target, exist_ok=True)
        if not batched:
            await receive_tree(
                Packets(), Path(target), merge=True, filter=ours, temporaries=PARTIAL
            )
            return

        async def read_batch() -> packets_pb2.Packets | None:
            data = await read()
            return None if data is None else packets_pb2.Packets.FromString(data)

        async with batched_packets(write, read_batch) as packets:
            await receive_tree(packets, Path(target), merge=True, filter=ours, temporaries=PARTIAL)

    try:
        anyio.run(receive)
    except UserError as err:
        raise RpcError(UNKNOWN, str(err), {}) from None
    except OSError as err:
        raise RpcError(UNKNOWN, f"{dest}: {err.strerror}", {}) from None


class _Stat:
    """A stat of fsutil's shape, made by the walker and encoded here (no protobuf runtime)."""

    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "modTime",
        "mode",
        "path",
        "size",
        "uid",
        "xattrs",
    )

    def __init__(
        self, path: str = "", mode: int = 0, uid: int = 0, gid: int = 0, modTime: int = 0
    ) -> None:
        self.path, self.mode, self.uid, self.gid, self.modTime = path, mode, uid, gid, modTime
        self.size = self.devmajor = self.devminor = 0
        self.linkname = ""
        self.xattrs: dict[str, bytes] = {}

    def encode(self) -> bytes:
        return messages.stat(
            self.path,
            self.mode,
            uid=self.uid,
            gid=self.gid,
            size=self.size,
            mod_time=self.modTime,
            linkname=self.linkname,
            devmajor=self.devmajor,
            devminor=self.devminor,
            xattrs=self.xattrs,
        )


class _Packets:
    """Packets out on a call: each its own message, or (batched) many to a ``Packets``."""

    def __init__(self, call: Call, batched: bool) -> None:
        self.call = call
        self.batched = batched
        self._lock = threading.Lock()
        self._waiting: list[bytes] = []
        self._size = 0

    def add(self, packet: bytes) -> None:
        with self._lock:
            self._waiting.append(packet)
            self._size += len(packet)
            full = self._size >= FLUSH_AT
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            waiting, self._waiting, self._size = self._waiting, [], 0
            if not waiting:
                return
            if self.batched:
                message = messages.packets(waiting)
                blob = b"\0" + len(message).to_bytes(4, "big") + message
            else:
                blob = b"".join(b"\0" + len(p).to_bytes(4, "big") + p for p in waiting)
            self.call.stream.send_data(blob)

    def received(self) -> Iterator[list[bytes]]:
        """The packets of each message the receiver sends."""
        for message in self.call.messages():
            yield messages.decode_packets(message) if self.batched else [message]


def _diff_copy(
    call: Call, metadata: dict[str, list[str]], locals_: Mapping[str, str], *, batched: bool
) -> None:
    name = (metadata.get("dir-name") or [""])[0]
    root = locals_.get(name)
    if root is None:
        raise RpcError(NOT_FOUND, f"no access allowed to dir {name!r}", {})
    out = _Packets(call, batched)
    files: dict[int, str] = {}
    failed: list[str] = []
    lister = threading.Thread(
        target=_list,
        args=(out, root, metadata, files, failed),
        name="diffcopy-list",
        daemon=True,
    )
    lister.start()
    try:
        _answer(out, os.path.realpath(root), files)
    except (OSError, _Refused) as err:
        # Said to the receiver first, as fsutil's sender says it (a PACKET_ERR).
        said = describe(err)
        with contextlib.suppress(H2Error):
            out.add(messages.packet(messages.PACKET_ERR, data=said.encode()))
            out.flush()
        raise RpcError(UNKNOWN, said, {}) from None
    finally:
        lister.join()
    if failed:
        raise RpcError(UNKNOWN, failed[0], {})


class _Refused(Exception):
    """The receiver broke the protocol (an unknown file id)."""


def _answer(out: _Packets, real: str, files: dict[int, str]) -> None:
    """Each request with its file, until the receiver's FIN."""
    for batch in out.received():
        for data in batch:
            kind, file_id, payload, _ = messages.decode_packet(data)
            if kind == messages.PACKET_ERR:
                said = payload.decode(errors="replace")
                raise RpcError(UNKNOWN, f"error from receiver: {said}", {})
            if kind == messages.PACKET_REQ:
                path = files.pop(file_id, None)
                if path is None:
                    raise _Refused(f"invalid file id {file_id}")
                _send_file(out, file_id, os.path.join(real, path))
            elif kind == messages.PACKET_FIN:
                out.add(messages.packet(messages.PACKET_FIN))
                out.flush()
                return
        out.flush()
    raise RpcError(UNKNOWN, "the receiver closed the stream before finishing", {})


def _list(
    out: _Packets,
    root: str,
    metadata: dict[str, list[str]],
    files: dict[int, str],
    failed: list[str],
) -> None:
    """Every stat, then an empty one, as fsutil's walk lists them; a failure is said to the
    receiver (a PACKET_ERR) and kept for the call's status."""
    _warmed()
    from llbkit.core.session.walker import walk

    file_id = 0
    try:
        batches = walk(
            root,
            include=metadata.get("include-patterns", []),
            exclude=metadata.get("exclude-patterns", []),
            follow_paths=metadata.get("followpaths", []),
            make=_Stat,
        )
        for batch in batches:
            entry: _Stat
            for entry in batch:  # type: ignore[assignment]  # made by _Stat
                if gomode.can_request_data(entry.mode):
                    files[file_id] = entry.path
                file_id += 1
                out.add(messages.packet(messages.PACKET_STAT, entry.encode()))
        out.add(messages.packet(messages.PACKET_STAT))
        out.flush()
    except H2Error as err:
        # The listing cannot go on: the call is reset rather than left without its end (the
        # receiver would wait for the rest of the listing forever).
        abandon(out.call.stream, "DiffCopy", err)
    except Exception as err:  # what the full client's sender reports the same way
        failed.append(describe(err))
        with contextlib.suppress(H2Error):
            out.add(messages.packet(messages.PACKET_ERR, data=failed[-1].encode()))
            out.flush()


def _send_file(out: _Packets, file_id: int, path: str) -> None:
    """Its data in 32 KiB packets, then an empty one (just that, for a file gone or no longer
    a regular file, as fsutil does)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            if statmod.S_ISREG(os.fstat(fd).st_mode):
                while chunk := os.read(fd, CHUNK_SIZE):
                    out.add(messages.packet(messages.PACKET_DATA, id=file_id, data=chunk))
        finally:
            os.close(fd)
    out.add(messages.packet(messages.PACKET_DATA, id=file_id))
