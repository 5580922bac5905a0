"""How much one layer may hold, set once from the engine's configuration: a module of its own,
so that opening an engine does not load the tar reader that applies the limits."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerLimits", "current_limits", "set_limits"]


@dataclass(frozen=True)
class LayerLimits:
    """What one layer may hold: ``[llbkit] max-layer-entries`` and ``max-layer-size`` (the
    bytes its tar stream expands to), so a small compressed layer cannot fill the machine."""

    entries: int = 10_000_000
    size: int = 1 << 40


_current = LayerLimits()


def set_limits(limits: LayerLimits) -> None:
    """The engine's limits, from its configuration, for every layer applied from now on."""
    global _current  # noqa: PLW0603 - one engine per process reads its configuration once
    _current = limits


def current_limits() -> LayerLimits:
    return _current
