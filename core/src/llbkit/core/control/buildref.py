"""A build's ref, in a module of its own: a daemon's light client makes one at its start."""

from __future__ import annotations

import os

__all__ = ["new_ref"]


def new_ref() -> str:
    """A fresh build ref, as BuildKit's clients make them (25 random base-36-ish characters)."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    # Not the secrets module: its import (random, hmac) costs more than a build's start should.
    return "".join(alphabet[byte % 36] for byte in os.urandom(25))
