"""The keys a ``RUN --mount=`` may hold, checked as BuildKit v0.11.6 checks them, so a typo
(``sharng=``, ``uidd=``) is refused with the key it was meant to be instead of being ignored."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from llbkit.plugins.frontend_dockerfile.suggest import hint

__all__ = ["mount_key_error", "mount_value_error", "parse_bool", "ram_in_bytes"]

_KEYS = (
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "ro",
    "rw",
    "readwrite",
)
_ALIASES = {"destination"}
_BARE = {"readonly", "ro", "readwrite", "rw"}
_FILE_INFO = {"secret", "ssh", "cache"}


def _for_other_type(key: str, kind: str) -> bool:
    return (key == "required" and kind not in ("secret", "ssh")) or (
        key == "size" and kind != "tmpfs"
    )


def mount_key_error(spec: str, expand: Callable[[str], str] = str) -> str | None:
    """Why ``spec`` (one ``--mount`` value) is refused, or ``None``; in BuildKit's words.
    ``expand`` gives a value's expansion: ``type=$KIND`` is the type KIND names."""
    kind = "bind"
    seen: set[str] = set()
    for field in spec.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if _for_other_type(key, kind):
            return f"unexpected key '{key}' for mount type '{kind}'"
        if not sep:
            if key not in _BARE and key != "required":
                return f"invalid field '{field}' must be a key=value pair"
            continue
        if key == "type":
            kind = expand(value).strip().lower()
        elif key not in _KEYS and key not in _ALIASES and key != "size":
            return f"unexpected key '{key}' in '{field}'{hint(key, _KEYS)}"
        seen.add(key)
    for key in ("mode", "uid", "gid"):
        if key in seen and kind not in _FILE_INFO:
            return f'{key} not allowed for "{kind}" type mounts'
    if "sharing" in seen and kind != "cache":
        return f"invalid cache sharing set for {kind} mount"
    return None


# Go's strconv.ParseBool, and docker's units.RAMInBytes, as BuildKit reads these values.
_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UINT32 = 1 << 32


def parse_bool(text: str) -> bool | None:
    """``strconv.ParseBool``: 1, t, T, TRUE, true, True and their false forms; else ``None``."""
    if text in ("T", "TRUE", "True", "F", "FALSE", "False"):
        text = text.lower()
    return _BOOLS.get(text)


def ram_in_bytes(text: str) -> int | None:
    """A size as ``units.RAMInBytes`` reads it (``64m``, ``1.5GiB``, binary units); or ``None``."""
    found = _RAM.match(text)
    if found is None:
        return None
    unit = (found.group(2) or "").lower()
    try:
        number = float(found.group(1))
    except ValueError:  # 1.2.3 passes the pattern, as in docker's, and fails here as there
        return None
    return int(number * (1024 ** " kmgtp".index(unit or " ")))


def mount_value_error(values: Mapping[str, str]) -> str | None:
    """Why an (expanded) ``--mount`` value is refused, or ``None``; in BuildKit's words."""
    for key, value in values.items():
        if key in ("readonly", "ro", "readwrite", "rw", "required") and parse_bool(value) is None:
            return f"invalid value for {key}: {value}"
        if key == "size" and ram_in_bytes(value) is None:
            return f"invalid value for {key}: {value}"
        if key == "sharing" and value.lower() not in ("shared", "private", "locked"):
            return f'unsupported sharing value "{value}"'
        base = 8 if key == "mode" else 10
        digits = "01234567" if base == 8 else "0123456789"
        if key in ("mode", "uid", "gid") and (
            not value or set(value) - set(digits) or int(value, base) >= _UINT32
        ):
            return f"invalid value {value} for {key}"
    if values.get("type", "bind").lower() == "ssh" and (values.get("source") or values.get("src")):
        return "ssh does not support source"
    if values.get("type", "bind").lower() == "secret":
        source = values.get("source") or values.get("src")
        target = values.get("target") or values.get("dst") or values.get("destination")
        if values.get("from"):
            return "secret mount should not have a from"
        if not source and not target and not values.get("id"):
            return "invalid secret mount. one of source, target required"
        if source and values.get("id"):
            return "both source and id can't be set"
    return None
