"""Where llbkitd listens: buildkitd's address forms, with its security rules — a unix socket
owned by root and the daemon's group (0660), TCP only with mutual TLS unless plainly asked —
and the sockets systemd hands over (``fd://``, socket activation: ``LISTEN_PID``,
``LISTEN_FDS`` and ``LISTEN_FDNAMES``, the first at fd 3)."""

from __future__ import annotations

import contextlib
import grp
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from llbkit.core.errors import ConfigError

__all__ = [
    "Activated",
    "Address",
    "TLSFiles",
    "activated_sockets",
    "default_address",
    "parse_address",
    "passed_fds",
]

#: the first descriptor systemd passes (SD_LISTEN_FDS_START)
FIRST_FD = 3


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
    """One ``--addr``: ``unix://PATH``, ``tcp://HOST:PORT`` or ``fd://[N|NAME]`` (``target``
    empty: every socket systemd passed)."""

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
        target = parts.netloc + parts.path
        if target == "*":
            target = ""
        if target.isascii() and target.isdigit() and int(target) < FIRST_FD:
            raise ConfigError(f"--addr {text}: systemd passes sockets from fd {FIRST_FD} on")
        if "/" in target or ":" in target:
            raise ConfigError(f"--addr {text}: use fd://, fd://N (a descriptor) or fd://NAME")
        return Address("fd", target)
    raise ConfigError(f"--addr {text}: use unix://PATH, tcp://HOST:PORT or fd://")


@dataclass(frozen=True)
class Activated:
    """A listening socket systemd passed, as ``--addr fd://`` selected it."""

    fd: int
    name: str
    sock: socket.socket

    @property
    def tcp(self) -> bool:
        return self.sock.family in {socket.AF_INET, socket.AF_INET6}

    @property
    def text(self) -> str:
        """``fd://3 (unix:///run/llbkit/llbkitd.sock)``: what the log shows."""
        where = self.sock.getsockname()
        if self.tcp:
            host, port = where[0], where[1]
            shown = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        else:
            path = where.decode(errors="replace") if isinstance(where, bytes) else where
            shown = f"unix://{path.replace(chr(0), '@')}"
        return f"fd://{self.fd} ({shown})"


def passed_fds(environ: MutableMapping[str, str] | None = None) -> list[tuple[int, str]]:
    """The descriptors systemd passed to this process, with their names
    (``FileDescriptorName=``, else the socket unit's name). The variables are removed, as
    sd_listen_fds(1) does, so that nothing this daemon starts takes them for its own, and the
    descriptors are kept from its children. Variables meant for another process (another
    ``LISTEN_PID``) pass nothing."""
    env = os.environ if environ is None else environ
    pid, count, names = (env.pop(key, "") for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if not pid or not count or pid.strip() != str(os.getpid()):
        return []
    if not (count.strip().isascii() and count.strip().isdigit()):
        raise ConfigError(f"LISTEN_FDS={count}: not a number of descriptors")
    labels = names.split(":") if names else []
    passed = []
    for index in range(int(count)):
        fd = FIRST_FD + index
        try:
            os.set_inheritable(fd, False)
        except OSError:
            raise ConfigError(f"LISTEN_FDS={count}: fd {fd} is not open") from None
        passed.append((fd, labels[index] if index < len(labels) else "unknown"))
    return passed


def activated_sockets(addresses: list[Address], passed: list[tuple[int, str]]) -> list[Activated]:
    """The listening sockets the ``fd://`` addresses select among those passed: ``fd://`` all
    of them, ``fd://N`` descriptor N, ``fd://NAME`` those of that name. Each is used once,
    however many addresses select it."""
    chosen: dict[int, str] = {}
    for address in addresses:
        if address.scheme != "fd":
            continue
        if not passed:
            raise ConfigError(
                f"--addr {address.text}: no sockets were passed by socket activation "
                "(LISTEN_FDS and LISTEN_PID are not set for this process): start llbkitd from "
                "a systemd .socket unit, or listen on unix:// or tcp://"
            )
        span = f"fds {FIRST_FD}-{passed[-1][0]}" if len(passed) > 1 else f"fd {FIRST_FD}"
        if not address.target:
            picked = passed
        elif address.target.isascii() and address.target.isdigit():
            picked = [p for p in passed if p[0] == int(address.target)]
        else:
            picked = [p for p in passed if p[1] == address.target]
        if not picked:
            known = ", ".join(sorted({name for _, name in passed}))
            raise ConfigError(
                f"--addr {address.text}: systemd passed {span} (named {known}), not that one"
            )
        chosen.update(picked)
    sockets = []
    for fd, name in sorted(chosen.items()):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as err:
            raise ConfigError(f"--addr fd://{fd}: not a socket ({err.strerror})") from None
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or not listening:
            sock.detach()
            raise ConfigError(
                f"--addr fd://{fd}: not a listening stream socket (use ListenStream= in the "
                ".socket unit, without Accept=yes)"
            )
        sockets.append(Activated(fd, name, sock))
    return sockets


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
            gid = int(group) if group.isascii() and group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"--group {group}: no such group") from None
    with contextlib.suppress(PermissionError):
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    os.chmod(path, 0o660)
