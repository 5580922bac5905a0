"""Tar headers as Go's ``archive/tar`` writes them, so that llbkit's layers and tarballs are
BuildKit's bytes, and a layer's diff id (and so an image config's digest) is BuildKit's.

A public helper (``docs/plugins.md``). Go writes a plain USTAR header whenever one can hold the
entry (a long ASCII path split into prefix and name), and a PAX header only for what cannot fit
(a non-ASCII or unsplittable path, a long link, large ids, extended attributes): its records in
key order, named ``DIR/PaxHeaders.0/NAME``, beside a classic header that keeps the ASCII
characters of the name. Device fields are always written, and an archive ends with its two zero
blocks and no padding. Times are whole seconds: the caller rounds (a tarball) or truncates (a
layer) them, as BuildKit's two writers do.
"""

from __future__ import annotations

import posixpath
import tarfile
from typing import IO, Protocol

__all__ = ["GoTarInfo", "GoTarWriter", "Sink", "go_header", "whole_seconds"]

BLOCK = 512
_NAME, _PREFIX = 100, 155
_MAGIC = b"ustar\x0000"


def whole_seconds(ns: int) -> int:
    """Go's ``Round(time.Second)`` of a time in nanoseconds: halves away from zero."""
    half = 500_000_000
    return (ns + half) // 10**9 if ns >= 0 else -((-ns + half) // 10**9)


def _is_ascii(data: bytes) -> bool:
    return data.isascii() and b"\x00" not in data


def _ascii(data: bytes) -> bytes:
    """Go's best effort for a classic field: only the ASCII characters, no NULs."""
    return bytes(b for b in data if b < 0x80 and b != 0)


def _fits_octal(size: int, value: int) -> bool:
    return value >= 0 and value < 1 << ((size - 1) * 3)


def _put_string(block: bytearray, at: int, size: int, data: bytes) -> None:
    block[at : at + size] = data[:size].ljust(size, b"\x00")
    if len(data) > size and block[at + size - 1] == ord("/"):
        # A cut name must not look like a directory's: its trailing slashes become NULs.
        kept = len(data[:size].rstrip(b"/"))
        block[at + kept] = 0


def _put_octal(block: bytearray, at: int, size: int, value: int) -> None:
    if not _fits_octal(size, value):
        value = 0  # the real value is in a PAX record
    _put_string(block, at, size, b"%0*o" % (size - 1, value))


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """A long ASCII path as USTAR's prefix and name fields, where a slash allows it."""
    length = len(name)
    if length <= _NAME or not _is_ascii(name):
        return None
    if length > _PREFIX + 1:
        length = _PREFIX + 1
    elif name[length - 1] == ord("/"):
        length -= 1
    cut = name.rfind(b"/", 0, length)
    suffix = len(name) - cut - 1
    if cut <= 0 or suffix > _NAME or suffix == 0 or cut > _PREFIX:
        return None
    return name[:cut], name[cut + 1 :]


def _record(key: bytes, value: bytes) -> bytes:
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        record = b"%d %s=%s\n" % (len(record), key, value)
    return record


def _checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _main_header(info: tarfile.TarInfo, name: bytes, prefix: bytes, link: bytes) -> bytearray:
    block = bytearray(BLOCK)
    _put_string(block, 0, 100, name)
    _put_octal(block, 100, 8, info.mode & 0o7777)
    _put_octal(block, 108, 8, info.uid)
    _put_octal(block, 116, 8, info.gid)
    _put_octal(block, 124, 12, info.size)
    _put_octal(block, 136, 12, int(info.mtime))
    block[156:157] = info.type
    _put_string(block, 157, 100, link)
    block[257:265] = _MAGIC
    _put_string(block, 265, 32, _ascii(_encode(info.uname)))
    _put_string(block, 297, 32, _ascii(_encode(info.gname)))
    _put_octal(block, 329, 8, info.devmajor)
    _put_octal(block, 337, 8, info.devminor)
    _put_string(block, 345, _PREFIX, prefix)
    _checksum(block)
    return block


def go_header(info: tarfile.TarInfo) -> bytes:
    """The header block(s) Go's writer makes of ``info`` (a directory's name gets its ``/``).

    ``info.mtime`` is taken as whole seconds; ``info.pax_headers`` carries extra records
    (``SCHILY.xattr.*``), which alone make a PAX header."""
    name = _encode(info.name)
    if info.type == tarfile.DIRTYPE and not name.endswith(b"/"):
        name += b"/"
    link = _encode(info.linkname)
    records: dict[bytes, bytes] = {}
    ustar = True
    if not _is_ascii(name) or len(name) > _NAME:
        records[b"path"] = name
        ustar = ustar and _split_ustar(name) is not None
    for key, text in (
        (b"linkpath", link),
        (b"uname", _encode(info.uname)),
        (b"gname", _encode(info.gname)),
    ):
        if not _is_ascii(text) or len(text) > (_NAME if key == b"linkpath" else 32):
            records[key] = text
            ustar = False
    for key, value, size in (
        (b"uid", info.uid, 8),
        (b"gid", info.gid, 8),
        (b"size", info.size, 12),
    ):
        if not _fits_octal(size, value):
            records[key] = b"%d" % value
            ustar = False
    mtime = int(info.mtime)
    if not _fits_octal(12, mtime):
        records[b"mtime"] = b"%d" % mtime
        ustar = False
    for extra, given in info.pax_headers.items():
        records.setdefault(_encode(extra), _encode(given))
        ustar = False
    if ustar:
        split = _split_ustar(name)
        head, base = split if split is not None else (b"", name)
        return bytes(_main_header(info, base, head, link))
    data = b"".join(_record(key, records[key]) for key in sorted(records))
    folder, base = posixpath.split(name)
    extended_name = _ascii(posixpath.join(folder, b"PaxHeaders.0", base))[:_NAME].rstrip(b"/")
    extended = bytearray(BLOCK)
    _put_string(extended, 0, 100, extended_name)
    for at, size in ((100, 8), (108, 8), (116, 8), (136, 12)):
        _put_octal(extended, at, size, 0)
    _put_octal(extended, 124, 12, len(data))
    extended[156:157] = tarfile.XHDTYPE
    extended[257:265] = _MAGIC
    _checksum(extended)
    padding = bytes(-len(data) % BLOCK)
    main = _main_header(info, _ascii(name), b"", _ascii(link))
    return bytes(extended) + data + padding + bytes(main)


class GoTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that ``tarfile`` writes with Go's headers (see :func:`go_header`)."""

    def tobuf(
        self,
        format: int | None = tarfile.DEFAULT_FORMAT,
        encoding: str | None = tarfile.ENCODING,
        errors: str = "surrogateescape",
    ) -> bytes:
        return go_header(self)


class Sink(Protocol):
    """Where a tar stream goes: anything with ``write``."""

    def write(self, data: bytes, /) -> object: ...


class GoTarWriter:
    """A tar stream as Go's writer makes it: headers by :func:`go_header`, each file's data
    padded to its block, two zero blocks at the end and nothing after them."""

    def __init__(self, out: Sink, *, copy_size: int = 1 << 20) -> None:
        self.out = out
        self.copy_size = copy_size

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        self.out.write(go_header(info))
        if data is None or not info.isreg():
            return
        left = info.size
        while left:
            chunk = data.read(min(left, self.copy_size))
            if not chunk:
                raise OSError(f"{info.name}: file shrank while it was archived")
            self.out.write(chunk)
            left -= len(chunk)
        if info.size % BLOCK:
            self.out.write(bytes(BLOCK - info.size % BLOCK))

    def close(self) -> None:
        self.out.write(bytes(2 * BLOCK))
