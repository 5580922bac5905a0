"""The image config as BuildKit v0.11 writes it (its keys, their order, which empty ones it
keeps), and the values it checks on the way: exposed ports and stop signals."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "exposed_ports",
    "go_duration",
    "go_ports",
    "go_quoted",
    "go_value",
    "image_config",
    "parse_duration",
    "parse_signal",
]

#: the config's keys in the order Go marshals BuildKit's ImageConfig struct
_ORDER = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "StopTimeout",
    "Shell",
)
_HEALTH_ORDER = ("Test", "Interval", "Timeout", "StartPeriod", "Retries")


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", 0, [], {})


def image_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as BuildKit marshals it: known keys in its order, empty ones left out but
    ``OnBuild`` (written ``null`` when there are none). Keys it does not know are dropped, as
    BuildKit drops them from a base image's config."""
    found: dict[str, Any] = {}
    for key in _ORDER:
        value = config.get(key)
        if key == "OnBuild":
            found[key] = list(value) if value else None
        elif key == "Healthcheck" and value:
            found[key] = {k: value[k] for k in _HEALTH_ORDER if not _empty(value.get(k))}
        elif not _empty(value):
            found[key] = value
    return found


def go_value(value: Any) -> str:
    """Go's ``%v`` of a string slice (``[a b]``) or a string."""
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)


_PROTOCOLS = ("tcp", "udp", "sctp")


def exposed_ports(specs: Sequence[str]) -> list[str]:
    """``port[/proto]`` keys of EXPOSE's words (ranges expanded), as Docker's nat package
    reads them; raise ``ValueError`` with its wording for a bad one."""
    found: list[str] = []
    for spec in specs:
        container = spec.rsplit(":", 1)[-1] if spec.count(":") else spec
        port, _, proto = container.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in _PROTOCOLS:
            raise ValueError(f"Invalid proto: {proto}")
        start, sep, end = port.partition("-")
        if not start.isdigit() or (sep and not end.isdigit()):
            raise ValueError(f"Invalid containerPort: {port}")
        first, last = int(start), int(end) if sep else int(start)
        if first > 65535 or last > 65535 or last < first:
            raise ValueError(f"Invalid containerPort: {port}")
        found += [f"{n}/{proto}" for n in range(first, last + 1)]
    return found


_SIGNALS = {
    "ABRT": 6,
    "ALRM": 14,
    "BUS": 7,
    "CHLD": 17,
    "CLD": 17,
    "CONT": 18,
    "FPE": 8,
    "HUP": 1,
    "ILL": 4,
    "INT": 2,
    "IO": 29,
    "IOT": 6,
    "KILL": 9,
    "PIPE": 13,
    "POLL": 29,
    "PROF": 27,
    "PWR": 30,
    "QUIT": 3,
    "SEGV": 11,
    "STKFLT": 16,
    "STOP": 19,
    "SYS": 31,
    "TERM": 15,
    "TRAP": 5,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "USR1": 10,
    "USR2": 12,
    "VTALRM": 26,
    "WINCH": 28,
    "XCPU": 24,
    "XFSZ": 25,
    "RTMIN": 34,
    "RTMAX": 64,
}


def parse_signal(text: str) -> int:
    """A stop signal's number: a number, or a name with or without ``SIG`` (``RTMIN+3`` too);
    raise ``ValueError`` worded as BuildKit words it."""
    if re.fullmatch(r"\d+", text):
        number = int(text)
        if number == 0 or number > 255:
            raise ValueError(f"invalid signal: {text}")
        return number
    name = text.upper().removeprefix("SIG")
    match = re.fullmatch(r"RTMIN\+(\d+)|RTMAX-(\d+)", name)
    if match:
        number = 34 + int(match.group(1)) if match.group(1) else 64 - int(match.group(2))
        if 34 <= number <= 64:
            return number
    if name in _SIGNALS:
        return _SIGNALS[name]
    raise ValueError(f"invalid signal: {text}")


def go_ports(ports: Sequence[str]) -> str:
    """Go's ``%v`` of a port set: ``map[80/tcp:{} 81/udp:{}]``, keys sorted."""
    return "map[" + " ".join(f"{p}:{{}}" for p in sorted(set(ports))) + "]"


def go_quoted(items: Sequence[str]) -> str:
    """Go's ``%q`` of a string slice: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration (``1m30s``, ``1.5ms``); raise ``ValueError`` worded as
    Go's ``time.ParseDuration`` (a bare number other than 0 has no unit)."""
    quoted = json.dumps(text, ensure_ascii=False)
    rest = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while rest:
        number = re.match(r"[0-9]*(\.[0-9]*)?", rest)
        digits = number.group(0) if number else ""
        if digits in ("", "."):
            raise ValueError(f"time: invalid duration {quoted}")
        rest = rest[len(digits) :]
        unit = re.match(r"[^0-9.]*", rest)
        name = unit.group(0) if unit else ""
        if not name:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if name not in _UNITS:
            raise ValueError(f"time: unknown unit {json.dumps(name)} in duration {quoted}")
        total += float(digits) * _UNITS[name]
        rest = rest[len(name) :]
    return sign * round(total)


def _fraction(value: int, unit: int) -> str:
    whole, part = divmod(value, unit)
    if not part:
        return str(whole)
    digits = str(part).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration`` string: ``0s``, ``1ms``, ``1.5s``, ``1m30s``, ``1h0m0s``."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_fraction(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds
