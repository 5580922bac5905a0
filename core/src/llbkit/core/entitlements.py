"""The entitlements a build may be granted (``--allow``, ``[grpc]``'s ``insecure-entitlements``):
a module of its own, so that the command line lists them without reading the configuration."""

from __future__ import annotations

__all__ = ["ENTITLEMENTS"]

#: BuildKit's, in its order
ENTITLEMENTS = ("network.host", "security.insecure")
