"""Which proxy a request goes through, as Go's ``http.ProxyFromEnvironment`` decides it for
buildkitd's resolver: ``HTTPS_PROXY`` or ``HTTP_PROXY`` (their lower-case names too), never for
loopback, never for a host ``NO_PROXY`` names. Only ``http://`` proxies are spoken to (a
``CONNECT`` tunnel for HTTPS); another scheme is refused in one line naming the variable.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Proxy", "ProxyError", "is_loopback", "proxy_for"]


class ProxyError(Exception):
    """The environment names a proxy that cannot be used."""


@dataclass(frozen=True)
class Proxy:
    """An ``http://`` proxy: where it is, and the ``Proxy-Authorization`` its URL carries."""

    host: str
    port: int
    authorization: str


def proxy_for(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy a request to ``host`` goes through: ``HTTPS_PROXY`` or ``HTTP_PROXY`` (or
    their lower-case names), unless ``host`` is loopback or ``NO_PROXY`` names it."""
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    url = next((os.environ[n] for n in names if os.environ.get(n)), "")
    if not url or is_loopback(host) or _no_proxy(host, port):
        return None
    return _parse_proxy(names[0], url)


@functools.lru_cache(maxsize=8)
def _parse_proxy(name: str, url: str) -> Proxy:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ProxyError(f"{name}={url}: only http:// proxies are supported")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyError(f"{name}={url}: not a valid port") from None
    authorization = ""
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    return Proxy(parts.hostname, port, authorization)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (a host name, without its port)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy(host: str, port: int) -> bool:
    """Whether ``NO_PROXY`` names ``host``: ``*``; an address or a CIDR block holding it; a
    domain and its subdomains (``.domain``: its subdomains only); any of them with a port."""
    listed = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    host = host.lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in listed.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name, want = entry, 0
        if entry.startswith("["):
            name, _, tail = entry[1:].partition("]")
            want = int(tail[1:]) if tail[1:].isdigit() else 0
        elif entry.count(":") == 1:
            name, _, tail = entry.partition(":")
            want = int(tail) if tail.isdigit() else 0
        if want and want != port:
            continue
        name = name.removeprefix("*")
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False
