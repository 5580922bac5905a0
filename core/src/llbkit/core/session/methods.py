"""The session's methods, headers and sizes, by the names BuildKit gives them (and llbkit's batched
DiffCopy beside them): one list for the daemon that calls them and for both clients that
serve them, in a module light enough for a client that must start fast."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AUTH",
    "BATCHED_FILE_SEND",
    "BATCHED_FILE_SYNC",
    "CHUNK_SIZE",
    "EXPORTER_ID",
    "FILE_SEND",
    "FILE_SYNC",
    "FLUSH_AT",
    "HEALTH",
    "MESSAGE_MAX",
    "SECRETS",
    "SSH_CHECK",
    "SSH_FORWARD",
    "shared_key",
]

HEALTH = "/grpc.health.v1.Health/Check"
FILE_SYNC = "/moby.filesync.v1.FileSync/DiffCopy"
FILE_SEND = "/moby.filesync.v1.FileSend/DiffCopy"
SECRETS = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
AUTH = "/moby.filesync.v1.Auth/Credentials"
SSH_CHECK = "/moby.sshforward.v1.SSH/CheckAgent"
SSH_FORWARD = "/moby.sshforward.v1.SSH/ForwardAgent"
#: the method an llbkit client serves beside FileSync.DiffCopy
BATCHED_FILE_SYNC = "/llbkit.filesync.v1.FileSyncBatched/DiffCopy"
#: and beside FileSend.DiffCopy, for outputs that are directories
BATCHED_FILE_SEND = "/llbkit.filesync.v1.FileSendBatched/DiffCopy"
#: the header that tells a FileSend call which exporter's output it carries
EXPORTER_ID = "buildkit-attachable-exporter-id"
#: a DiffCopy sender reads a file through a buffer of this size, as fsutil does: one DATA
#: packet per read
CHUNK_SIZE = 32 * 1024
#: a batched sender's packets go out once this much waits (below every side's message limit)
FLUSH_AT = 256 * 1024
#: the most bytes one message of the session's own stream, or of an output's FileSend,
#: carries: what is waiting, up to this (a message costs about the same whatever its size)
MESSAGE_MAX = 1 << 20


def shared_key(locals_: Mapping[str, str | os.PathLike[str]]) -> str:
    """The session's shared key: one per machine, user and set of directories. The daemon
    keeps its mirror of the client's directories under it, so the next build (through either
    client) sends only what changed."""
    try:  # CPython 3.11's own SHA-256: hashlib's import loads OpenSSL's, a few ms of a start
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # later versions name it otherwise: hashlib, a little slower
        from hashlib import sha256

    dirs = sorted(f"{name}={os.path.realpath(path)}" for name, path in locals_.items())
    text = "\0".join([os.uname().nodename, str(os.getuid()), *dirs])
    return str(sha256(text.encode()).hexdigest()[:32])
