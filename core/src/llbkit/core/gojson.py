"""JSON as Go's ``encoding/json`` writes it, for the keys llbkit makes as BuildKit makes them
(a cache map, an HTTP source's key): fields in the order given, no spaces, ``<``, ``>``, ``&``,
U+2028 and U+2029 escaped, control characters as ``\\u00XX`` but for ``\\n``, ``\\r`` and
``\\t``, bytes in base64."""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["go_json"]


def _go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: Go writes the replacement char
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, bytes):
        out.append('"' + base64.b64encode(value).decode() + '"')
    elif isinstance(value, dict):
        out.append("{")
        for n, (key, item) in enumerate(value.items()):
            if n:
                out.append(",")
            out.append(_go_string(key) + ":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"no Go JSON for {type(value).__name__}")


def go_json(value: Any) -> bytes:
    """``value`` (dicts in field order) as Go's ``json.Marshal`` writes it."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8", "surrogatepass")
