"""What the daemon's calls to a client's session share: how one ends when the session does."""

from __future__ import annotations

import asyncio
from typing import Any

from llbkit.core.errors import UserError

__all__ = ["read_message"]


async def read_message(call: Any) -> Any:
    """The call's next message (``grpc.aio.EOF`` at its end). A cancellation no one asked of
    this task is the channel's, closed with the client's session: raised as that, which a
    task group does not take for its own cancellation (and end a transfer as if complete)."""
    try:
        return await call.read()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise UserError("the client's session ended") from None
