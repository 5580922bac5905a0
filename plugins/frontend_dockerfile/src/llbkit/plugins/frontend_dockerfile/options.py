"""The frontend's ``--opt`` values read as BuildKit's dockerfile.v0 reads them: the same values
taken, the same ones refused, in its words (Go's ``encoding/csv``, ``strconv``, containerd's
platform parser, go-units' ulimits)."""

from __future__ import annotations

import ipaddress
import re

from llbkit.core.errors import ConfigError
from llbkit.core.known_platforms import parse_platform
from llbkit.core.llb.dot import go_quote
from llbkit.core.plugins.source import ResolveMode
from llbkit.sdk import llb

__all__ = [
    "go_int64",
    "parse_extra_hosts",
    "parse_platforms",
    "parse_resolve_mode",
    "parse_ulimits",
]

#: the resource names go-units knows (``as`` is left out there too)
ULIMITS = frozenset(
    {
        *("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile"),
        *("nproc", "rss", "rtprio", "rttime", "sigpending", "stack"),
    }
)
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_EXTRANEOUS = 'parse error on line 1, column {}: extraneous or missing " in quoted-field'


def go_int64(text: str) -> int:
    """``strconv.ParseInt(text, 10, 64)``; its error as the message."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text)
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


def csv_fields(text: str) -> list[str]:
    """The first record of ``text`` as Go's ``encoding/csv`` reads it (commas, double quotes
    doubled inside quoted fields, spaces kept)."""
    fields: list[str] = []
    at, line = 0, text.split("\n", 1)[0].removesuffix("\r")
    while True:
        if line.startswith('"', at):
            value, at = _quoted(line, at)
        else:
            end = line.find(",", at)
            value = line[at:] if end < 0 else line[at:end]
            if '"' in value:
                column = at + value.index('"') + 1
                raise ValueError(
                    f'parse error on line 1, column {column}: bare " in non-quoted-field'
                )
            at = len(line) if end < 0 else end
        fields.append(value)
        if at >= len(line):
            return fields
        at += 1  # the comma


def _quoted(line: str, at: int) -> tuple[str, int]:
    value, at = "", at + 1
    while True:
        end = line.find('"', at)
        if end < 0:
            raise ValueError(_EXTRANEOUS.format(len(line) + 1))
        value += line[at:end]
        if line.startswith('"', end + 1):
            value += '"'
            at = end + 2
            continue
        if end + 1 < len(line) and line[end + 1] != ",":
            raise ValueError(_EXTRANEOUS.format(end + 1))  # the closing quote's column
        return value, end + 1


def _fields(what: str, text: str) -> list[str]:
    try:
        return csv_fields(text)
    except ValueError as err:
        raise ConfigError(f"failed to parse {what}: {err}") from None


def _go_ip(text: str) -> str | None:
    """``net.ParseIP(text).String()``, or None where Go finds no address."""
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address):
        if "%" in text:
            return None
        if found.ipv4_mapped is not None:
            return str(found.ipv4_mapped)
    return str(found)


def parse_extra_hosts(text: str) -> list[tuple[str, str]]:
    """``add-hosts``: ``host=ip`` pairs, both lowercased, each ip as Go prints it."""
    if not text:
        return []
    found = []
    for field in _fields("additional hosts", text):
        host_name, sep, value = field.partition("=")
        if not sep:
            raise ConfigError(f"failed to parse additional hosts: invalid key-value pair {field}")
        value = value.lower()
        ip = _go_ip(value)
        if ip is None:
            raise ConfigError(f"failed to parse additional hosts: failed to parse IP {value}")
        found.append((host_name.lower(), ip))
    return found


def parse_ulimits(text: str) -> list[tuple[str, int, int]]:
    """``ulimit``: ``name=soft[:hard]`` of go-units' names (lowercase), soft not over hard."""
    if not text:
        return []
    found = []
    for field in _fields("ulimit", text):
        try:
            found.append(_ulimit(field))
        except ValueError as err:
            raise ConfigError(f"failed to parse ulimit: {err}") from None
    return found


def _ulimit(text: str) -> tuple[str, int, int]:
    name, sep, values = text.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {text}")
    if name not in ULIMITS:
        raise ValueError(f"invalid ulimit type: {name}")
    limits = values.split(":")
    if len(limits) > 2:
        raise ValueError(
            f"too many limit value arguments - {values}, can only have up to two, `soft[:hard]`"
        )
    hard = go_int64(limits[1]) if len(limits) == 2 else None
    soft = go_int64(limits[0])
    hard = soft if hard is None else hard
    if hard != -1 and soft > hard:
        raise ValueError(
            f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )
    return name, soft, hard


def parse_resolve_mode(text: str) -> ResolveMode:
    """``image-resolve-mode``: ``default`` (or empty), ``pull`` or ``local``."""
    if text in ("", "default"):
        return "default"
    if text == "pull":
        return "pull"
    if text == "local":
        return "local"
    raise ConfigError(f"invalid image-resolve-mode: {text}")


def parse_platforms(text: str) -> list[llb.Platform]:
    """``platform``: comma-separated, each parsed and normalized as containerd does."""
    found = []
    for item in text.split(","):
        try:
            found.append(llb.Platform(*parse_platform(item)))
        except ValueError as err:
            raise ConfigError(
                f"failed to parse target platform {item}: {err}: invalid argument"
            ) from None
    return found
