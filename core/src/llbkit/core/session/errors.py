"""Why a DiffCopy failed: kept apart from the streams so that the walker (and a client that
must start fast) can say it without importing them."""

from __future__ import annotations

from llbkit.core.errors import UserError

__all__ = ["DiffCopyError", "InvalidStreamError", "PeerClosedError", "PeerError", "describe"]


class DiffCopyError(UserError):
    """A file transfer between client and daemon that could not complete."""


class PeerError(DiffCopyError):
    """The other side reported a failure (a ``PACKET_ERR``); ``message`` is what it said."""

    def __init__(self, role: str, message: str) -> None:
        self.message = message
        super().__init__(f"error from {role}: {message}")


class PeerClosedError(DiffCopyError):
    """A send found the other side gone."""


class InvalidStreamError(DiffCopyError):
    """The peer broke the protocol: a bad path, an order fsutil forbids, an unknown file id."""


def describe(err: BaseException) -> str:
    """One line for an error, as the peer is told it: an OSError names its file."""
    if isinstance(err, OSError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        return f"{where}: {err.strerror}" if where else err.strerror
    return str(err) or type(err).__name__
