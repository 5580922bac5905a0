"""Whose registry credentials a build uses: this machine's Docker config, or — for a build a
daemon runs for a client — the client's, asked through its session when a registry wants
them, kept in memory only (BuildKit's ``Auth`` attachable: credentials stay on the client)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

__all__ = [
    "DOCKER_HUB_HOST",
    "Lookup",
    "credentials",
    "credentials_from",
    "docker_config_credentials",
    "identity",
    "per_client",
]

#: where Docker Hub's registry (``docker.io`` in a reference) is reached
DOCKER_HUB_HOST = "registry-1.docker.io"

#: ``host`` -> (user, secret), or ``None`` for anonymous access
Lookup = Callable[[str], Awaitable[tuple[str, str] | None]]

_SOURCE: ContextVar[Lookup | None] = ContextVar("llbkit_registry_credentials", default=None)


@contextlib.contextmanager
def credentials_from(lookup: Lookup) -> Iterator[None]:
    """Registry access within the block (and the tasks it starts) asks ``lookup``."""
    token = _SOURCE.set(lookup)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def per_client() -> bool:
    """Whether the running build is a daemon's for one of its clients: then nothing that
    another client's credentials fetched may stand in for asking the registry."""
    return _SOURCE.get() is not None


async def credentials(host: str) -> tuple[str, str] | None:
    """The credentials for ``host`` of whoever the running build belongs to."""
    lookup = _SOURCE.get()
    if lookup is not None:
        return await lookup(host)
    return docker_config_credentials(host)


def identity(found: tuple[str, str] | None) -> str:
    """A name for a set of credentials that reveals nothing of them: tokens got with one
    client's credentials are never used for another's requests."""
    if found is None:
        return ""
    import hashlib

    return hashlib.sha256(f"{found[0]}\0{found[1]}".encode()).hexdigest()[:16]


def docker_config_credentials(host: str) -> tuple[str, str] | None:
    """``auths`` of ``$DOCKER_CONFIG/config.json`` (``~/.docker``), as ``docker login`` wrote."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    try:
        with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as config:
            text = config.read()
    except (OSError, ValueError):
        return None
    import json  # only once there is a config (a client's start pays for what it uses)

    try:
        auths = json.loads(text).get("auths", {})
    except (ValueError, RecursionError, AttributeError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == DOCKER_HUB_HOST:
        keys += ["https://index.docker.io/v1/", "docker.io"]
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user, password
    return None
