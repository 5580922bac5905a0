"""Sizes and durations as BuildKit's config and flags write them (``512MB``, ``48h``)."""

from __future__ import annotations

import re
from typing import Any

from llbkit.core.errors import ConfigError

__all__ = ["parse_bytes", "parse_duration"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(value: Any, where: str) -> int:
    """``1024``, ``"512MB"``, ``"10GiB"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"{where}: {value!r} is not a size (e.g. 512MB, 10GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any, where: str) -> float:
    """Seconds as a number, or a Go duration (``48h``, ``1h30m``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {value!r} is not a duration (e.g. 48h, 30m, 3600)")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def format_bytes(size: float, spec: str = ".2f") -> str:
    """Decimal bytes as BuildKit's tools print them (``tonistiigi/units``) with the Go verb
    ``spec``: ``123B``, ``1.23kB``, ``4.56MB`` with ``.2f`` (progress, ``du``); ``512MB``,
    ``1.5GB`` with ``g`` (GC rules in ``debug workers``)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            break
        size /= 1000
    return f"{int(size)}B" if unit == "B" else f"{size:{spec}}{unit}"
