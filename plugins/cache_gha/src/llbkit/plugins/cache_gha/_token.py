"""The Actions runtime token, read as BuildKit's client reads it: an unverified JWT whose ``ac``
claim names the cache scopes the job may read and write."""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llbkit.core.errors import ConfigError

READ = 1
WRITE = 2


@dataclass(frozen=True)
class Scope:
    """One entry of the ``ac`` claim: a ref (``refs/heads/main``) and its permission bits."""

    scope: str
    permission: int

    @property
    def readable(self) -> bool:
        return bool(self.permission & READ)

    @property
    def writable(self) -> bool:
        return bool(self.permission & WRITE)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _payload(token: str, what: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ConfigError(f"{what}: token= is not a JWT (header.payload.signature)")
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # not base64url, not UTF-8, or not JSON
        raise ConfigError(f"{what}: token= has no readable JWT payload") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{what}: token= payload is not a JSON object")
    return payload


def parse_token(token: str, what: str, now: float | None = None) -> list[Scope]:
    """The scopes ``token`` grants; raises a one-line :class:`ConfigError` for a token that
    is malformed, expired or not valid yet. The signature is not checked (the service does)."""
    claims = _payload(token, what)
    for claim in ("ac", "exp", "nbf"):
        if claim not in claims:
            raise ConfigError(
                f"{what}: token= has no {claim!r} claim; pass the job's ACTIONS_RUNTIME_TOKEN"
            )
    exp, nbf = claims["exp"], claims["nbf"]
    for claim, value in (("exp", exp), ("nbf", nbf)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{what}: token= claim {claim!r} is not a number")
    now = time.time() if now is None else now
    if now >= exp:
        raise ConfigError(
            f"{what}: token= expired at {_when(exp)}; pass the current ACTIONS_RUNTIME_TOKEN"
        )
    if now < nbf:
        raise ConfigError(f"{what}: token= is not valid before {_when(nbf)}")
    try:
        entries = json.loads(claims["ac"]) if isinstance(claims["ac"], str) else None
    except (ValueError, RecursionError):  # the claim holds a string that is not JSON
        entries = None
    if not isinstance(entries, list):
        raise ConfigError(f"{what}: token= claim 'ac' is not a JSON string holding a list")
    scopes = []
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("Scope"), str)
            or not isinstance(entry.get("Permission"), int)
        ):
            raise ConfigError(f"{what}: token= claim 'ac' holds {entry!r}, not Scope/Permission")
        scopes.append(Scope(entry["Scope"], entry["Permission"]))
    return scopes
