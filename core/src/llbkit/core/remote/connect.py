"""Reaching a daemon: buildctl's address forms and TLS flags."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from llbkit.core.errors import ConfigError, UserError

__all__ = ["ADDRESS_ENV", "Endpoint", "MESSAGE_BYTES", "open_channel"]

ADDRESS_ENV = "BUILDKIT_HOST"
#: as buildctl: a definition or a file chunk may be large
MESSAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon is and how to trust it (``--tlscacert``... or ``--tlsdir``)."""

    address: str
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    tls_dir: str = ""

    def files(self) -> tuple[str, str, str]:
        """CA, certificate and key, ``--tlsdir`` filling what is not given (as buildctl:
        ``ca.pem``, ``cert.pem``, ``key.pem``)."""
        ca, cert, key = self.ca, self.cert, self.key
        if self.tls_dir:
            base = Path(self.tls_dir)
            ca = ca or str(base / "ca.pem")
            cert = cert or str(base / "cert.pem")
            key = key or str(base / "key.pem")
        return ca, cert, key


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag} {path}: {err.strerror}") from None


def open_channel(endpoint: Endpoint) -> grpc.aio.Channel:
    """A channel to the daemon; connecting happens on the first call."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ("grpc.max_send_message_length", MESSAGE_BYTES),
    ]
    parts = urlsplit(endpoint.address)
    if parts.scheme == "unix":
        path = parts.netloc + parts.path
        if not path:
            raise ConfigError(f"--addr {endpoint.address}: unix:// needs a socket path")
        return grpc.aio.insecure_channel(f"unix:{path}", options=options)
    if parts.scheme != "tcp":
        raise ConfigError(
            f"--addr {endpoint.address}: use unix://PATH or tcp://HOST:PORT "
            f"({parts.scheme or 'no'} scheme is not supported)"
        )
    if not parts.hostname or not parts.port:
        raise ConfigError(f"--addr {endpoint.address}: tcp:// needs a host and a port")
    ca, cert, key = endpoint.files()
    if not (ca or cert or key):
        return grpc.aio.insecure_channel(parts.netloc, options=options)
    if bool(cert) != bool(key):
        raise ConfigError("--tlscert and --tlskey go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "--tlscacert") if ca else None,
        private_key=_read(key, "--tlskey") if key else None,
        certificate_chain=_read(cert, "--tlscert") if cert else None,
    )
    if endpoint.server_name:
        options.append(("grpc.ssl_target_name_override", endpoint.server_name))
    return grpc.aio.secure_channel(parts.netloc, credentials, options=options)


def failure(err: grpc.aio.AioRpcError, address: str) -> UserError:
    """A call's failure as one line; an unreachable daemon says where it was looked for."""
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        from llbkit.core.remote.failures import unreachable

        return unreachable(address, err.details() or "")
    return UserError(err.details() or err.code().name.lower())


def default_address() -> str:
    return os.environ.get(ADDRESS_ENV, "")
