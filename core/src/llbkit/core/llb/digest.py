"""Digests of LLB ops: ``sha256:`` + hex of the op's marshaled bytes, as BuildKit computes them."""

from __future__ import annotations

import hashlib
import re

__all__ = ["digest_of", "is_digest", "short"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    """The digest of ``data`` (an op's bytes as received; never re-marshal before hashing)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    """Tell whether ``text`` is a well-formed sha256 digest string."""
    return bool(_DIGEST.match(text))


def short(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits, for messages."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest[:19]
