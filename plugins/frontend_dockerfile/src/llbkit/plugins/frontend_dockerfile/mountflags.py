"""The keys a ``RUN --mount=`` may hold, checked as BuildKit v0.11.6 checks them, so a typo
(``sharng=``, ``uidd=``) is refused with the key it was meant to be instead of being ignored."""

from __future__ import annotations

__all__ = ["mount_key_error"]

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


def _distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _suggest(key: str) -> str:
    """`` (did you mean KEY?)`` for the nearest key under three edits, as BuildKit's hint."""
    best, least = "", 3
    for known in _KEYS:
        dist = _distance(key, known)
        if dist < least:
            best, least = known, dist
    return f" (did you mean {best}?)" if best else ""


def _for_other_type(key: str, kind: str) -> bool:
    return (key == "required" and kind not in ("secret", "ssh")) or (
        key == "size" and kind != "tmpfs"
    )


def mount_key_error(spec: str) -> str | None:
    """Why ``spec`` (one ``--mount`` value) is refused, or ``None``; in BuildKit's words."""
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
            kind = value.strip().lower()
        elif key not in _KEYS and key not in _ALIASES and key != "size":
            return f"unexpected key '{key}' in '{field}'{_suggest(key)}"
        seen.add(key)
    for key in ("mode", "uid", "gid"):
        if key in seen and kind not in _FILE_INFO:
            return f'{key} not allowed for "{kind}" type mounts'
    if "sharing" in seen and kind != "cache":
        return f"invalid cache sharing set for {kind} mount"
    return None
