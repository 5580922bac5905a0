"""The addresses ``/etc/hosts`` gives a name, looked up before the system's resolver, as Go's
resolver (and so buildkitd's) does on a host whose ``nsswitch.conf`` reads ``files`` first. A
registry on ``localhost``, or on a name the file lists, is reached without a resolver thread or
the IDNA codec (3 ms of a build's start)."""

from __future__ import annotations

__all__ = ["HOSTS", "listed"]

HOSTS = "/etc/hosts"


def listed(host: str, path: str | None = None) -> list[str]:
    """The addresses ``path`` (:data:`HOSTS`) lists for ``host``, in its order (none: ask
    the resolver)."""
    name = host.lower().rstrip(".")
    if not name or ":" in name:  # an IPv6 literal is no name
        return []
    try:
        with open(path or HOSTS, encoding="utf-8", errors="replace") as hosts:
            lines = hosts.read().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        fields = line.partition("#")[0].split()
        if len(fields) > 1 and name in (alias.lower().rstrip(".") for alias in fields[1:]):
            address = fields[0].partition("%")[0]  # a zone is not kept: Go's hosts file neither
            if address not in found:
                found.append(address)
    return found
