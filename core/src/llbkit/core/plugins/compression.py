"""``compression-level``, read once for the exporters and the cache backends, so that a level
the compressor cannot use is refused when the options are read, not as a traceback mid-export.

gzip takes -1 (its default) to 9, as Go's gzip (BuildKit refuses others with "gzip: invalid
compression level"); zstd takes any whole number, as BuildKit maps every level onto its
encoder's speeds, here kept within what zstd itself accepts.
"""

from __future__ import annotations

from llbkit.core.errors import ConfigError

__all__ = ["compression_level"]

_ZSTD = (-(1 << 17), 22)


def compression_level(compression: str, text: str, what: str) -> int | None:
    """The level for ``compression`` that ``compression-level=text`` asks for (``None``: the
    compressor's default); ``what`` names the option's owner in the message."""
    if not text:
        return None
    try:
        level = int(text)
    except ValueError:
        raise ConfigError(f"{what}: compression-level={text!r} is not a number") from None
    if compression == "gzip" and not -1 <= level <= 9:
        raise ConfigError(
            f"{what}: compression-level={level}: gzip levels are -1 (its default) to 9"
        )
    if compression == "zstd":
        return min(max(level, _ZSTD[0]), _ZSTD[1])
    return level
