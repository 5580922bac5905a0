"""fsutil's DiffCopy, both directions: how a directory tree crosses between client and daemon.

The client sends its ``--local`` directories with it (FileSync ``DiffCopy``: the daemon
receives into a mirror holding the previous sync, so only changed files travel), and the daemon
sends a ``local`` output with it (FileSend ``DiffCopy``: the client receives). Byte-compatible
with the fsutil BuildKit v0.11 vendors, so either side may be Go.
"""

from __future__ import annotations

from llbkit.core.session.diffcopy_receive import Differ, receive_tree
from llbkit.core.session.diffcopy_send import CHUNK_SIZE, send_tree
from llbkit.core.session.diskwriter import Filter
from llbkit.core.session.stream import (
    DiffCopyError,
    InvalidStreamError,
    MemoryPacketStream,
    PacketStream,
    PeerError,
    Sent,
    memory_pipe,
)

__all__ = [
    "CHUNK_SIZE",
    "DiffCopyError",
    "Differ",
    "Filter",
    "InvalidStreamError",
    "MemoryPacketStream",
    "PacketStream",
    "PeerError",
    "Sent",
    "memory_pipe",
    "receive_tree",
    "send_tree",
]
