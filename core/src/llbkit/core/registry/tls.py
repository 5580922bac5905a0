"""TLS contexts: one verifying context per process with the machine's CAs (as buildkitd's Go
clients verify registries and downloads), and one per set of ``[registry."host"]`` TLS settings
(``ca``, ``keypair``, ``tlsconfigdir``, ``insecure``).

Building a context loads the whole CA bundle (about 20 ms), and a cold build makes a client per
image it resolves and pulls. An ``SSLContext`` may serve many connections at once, so each is
made once and kept while its files do not change. The machine's bundle is read before the
first HTTPS request that needs it: a build that only speaks plain HTTP (a local registry or
mirror) never pays for it.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["host_context", "system_context", "trust"]


@functools.cache
def system_context() -> ssl.SSLContext:
    """The machine's CAs (``/etc/ssl/certs``, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``): what a
    registry or a download is verified with, as Go's system pool verifies it for buildkitd.
    :func:`ssl.create_default_context`'s context, its bundle not read yet: a client using it
    reads it (:func:`trust`) before its first HTTPS request."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies names and chains
    if sys.version_info >= (3, 13):  # as create_default_context sets them there
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog  # as create_default_context honours it
    return context


_loaded: set[int] = set()
_loading = threading.Lock()


def trust(context: ssl.SSLContext) -> None:
    """Read the machine's bundle into ``context``, once (a plain ``SSLContext``: anyio hands
    a subclass's handshakes to a worker thread, each one)."""
    if id(context) not in _loaded:
        with _loading:
            if id(context) not in _loaded:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
                _loaded.add(id(context))


def host_context(host: str, settings: Mapping[str, Any]) -> ssl.SSLContext | bool:
    """The TLS context for HTTPS to ``host``, as BuildKit's resolver makes it: the CAs of
    ``ca`` and of ``tlsconfigdir``'s ``*.crt`` files added to the machine's, the client
    certificate of ``keypair`` (or of a ``tlsconfigdir`` ``NAME.cert`` with ``NAME.key``), no
    verification with ``insecure``. ``True`` (the machine's CAs alone) when none is set."""
    cas = [str(p) for p in settings.get("ca", [])]
    pairs = [(str(p.get("cert", "")), str(p.get("key", ""))) for p in settings.get("keypair", [])]
    for folder in settings.get("tlsconfigdir", []):
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, PermissionError):  # BuildKit skips these too
            continue
        except OSError as err:
            raise _error(
                f'registry."{host}": tlsconfigdir {folder}: {err.strerror or err}'
            ) from None
        cas += [os.path.join(folder, n) for n in names if n.endswith(".crt")]
        pairs += [
            (os.path.join(folder, n), os.path.join(folder, n.removesuffix(".cert") + ".key"))
            for n in names
            if n.endswith(".cert")
        ]
    insecure = bool(settings.get("insecure"))
    if not cas and not pairs and not insecure:
        return True
    stamps = tuple(_stamp(host, "ca", path) for path in cas)
    keys = tuple((_stamp(host, "keypair", c), _stamp(host, "keypair", k)) for c, k in pairs)
    return _context(host, stamps, keys, insecure)


def _stamp(host: str, key: str, path: str) -> tuple[str, int]:
    """A file and its modification time: a context is made again when a file changes."""
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError as err:
        raise _error(f'registry."{host}": {key} {path}: {err.strerror or err}') from None


@functools.lru_cache(maxsize=64)
def _context(
    host: str,
    cas: tuple[tuple[str, int], ...],
    pairs: tuple[tuple[tuple[str, int], tuple[str, int]], ...],
    insecure: bool,
) -> ssl.SSLContext:
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context()  # the machine's CAs, then the registry's
        for path, _ in cas:
            try:
                context.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as err:
                raise _error(
                    f'registry."{host}": ca {path}: not a PEM certificate ({_reason(err)})'
                ) from None
    # An SSLContext holds one client certificate: the first pair, as Go sends the first
    # certificate that suits a server asking for one.
    for (cert, _), (key, _) in pairs[:1]:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise _error(
                f'registry."{host}": keypair {cert} with {key}: cannot load ({_reason(err)})'
            ) from None
    return context


def _error(message: str) -> Exception:
    from llbkit.core.registry.client import RegistryError  # which imports this module

    return RegistryError(message)


def _reason(err: Exception) -> str:
    return str(getattr(err, "reason", None) or getattr(err, "strerror", None) or err)
