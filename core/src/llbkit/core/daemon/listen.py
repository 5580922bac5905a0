"""Where llbkitd listens: buildkitd's address forms, with its security rules — a unix socket
owned by root and the daemon's group (0660), TCP only with mutual TLS unless plainly asked."""

from __future__ import annotations

import contextlib
import grp
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from llbkit.core.errors import ConfigError

__all__ = ["Address", "TLSFiles", "default_address", "parse_address"]


@dataclass(frozen=True)
class TLSFiles:
    """The server's certificate and key, and the CA its clients' certificates must chain to."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @property
    def complete(self) -> bool:
        return bool(self.cert and self.key and self.ca)

    def credentials(self) -> grpc.ServerCredentials:
        def read(path: str, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as err:
                raise ConfigError(f"cannot read the TLS {what} {path}: {err.strerror}") from None

        return grpc.ssl_server_credentials(
            [(read(self.key, "key"), read(self.cert, "certificate"))],
            root_certificates=read(self.ca, "CA certificate"),
            require_client_auth=True,
        )


@dataclass(frozen=True)
class Address:
    """One ``--addr``: ``unix://PATH`` or ``tcp://HOST:PORT``."""

    scheme: str
    target: str

    @property
    def text(self) -> str:
        return f"{self.scheme}://{self.target}"


def default_address() -> str:
    """``unix:///run/llbkit/llbkitd.sock`` as root, else under ``$XDG_RUNTIME_DIR``."""
    if os.geteuid() == 0:
        return "unix:///run/llbkit/llbkitd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return f"unix://{runtime}/llbkit/llbkitd.sock"


def parse_address(text: str) -> Address:
    parts = urlsplit(text)
    if parts.scheme == "unix":
        path = parts.netloc + parts.path
        if not path:
            raise ConfigError(f"--addr {text}: unix:// needs a socket path")
        return Address("unix", path)
    if parts.scheme == "tcp":
        if not parts.hostname or parts.port is None:
            raise ConfigError(f"--addr {text}: tcp:// needs a host and a port")
        return Address("tcp", parts.netloc)
    if parts.scheme == "fd":
        raise ConfigError(
            f"--addr {text}: socket activation (fd://) is not supported yet; use unix:// "
            "(see docs/daemon.md)"
        )
    raise ConfigError(f"--addr {text}: use unix://PATH or tcp://HOST:PORT")


def prepare_unix(path: str) -> None:
    """The socket's directory exists; a stale socket of a daemon that died is removed, a live
    one is refused (two daemons on one socket would take each other's clients)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() and not target.is_symlink():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            target.unlink()
            return
    raise ConfigError(f"{path}: another daemon is listening there")


def secure_unix(path: str, *, uid: int | None, gid: int | None, group: str) -> None:
    """0660, owned by ``uid`` (default: us) and the daemon's group."""
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"--group {group}: no such group") from None
    with contextlib.suppress(PermissionError):
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    os.chmod(path, 0o660)
