"""``http://`` and ``https://`` sources: one downloaded file, optionally pinned by checksum."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llbkit.core.errors import ConfigError, UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    parse_int,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform

_KNOWN = (
    "http.checksum",
    "http.filename",
    "http.perm",
    "http.uid",
    "http.gid",
    "http.authheadersecret",
)
_DIGEST = re.compile(r"^sha(256:[0-9a-f]{64}|384:[0-9a-f]{96}|512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class HTTPJob(ParsedSource):
    identifier: str
    checksum: str = ""
    filename: str = ""
    perm: int = 0o600
    uid: int = 0
    gid: int = 0


def parse_http(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> HTTPJob:
    _, rest = strip_scheme(identifier, {"http", "https"})
    what = f"source {identifier}"
    if not rest or rest.startswith("/"):
        raise UserError(f"invalid source identifier {identifier!r}: no host")
    check_attrs(
        what, {k: v for k, v in attrs.items() if not k.startswith("http.header.")}, "http.", _KNOWN
    )
    checksum = attrs.get("http.checksum", "")
    if checksum and not _DIGEST.match(checksum):
        raise ConfigError(
            f"{what}: attribute http.checksum={checksum!r} is not a digest (sha256:<64 hex>)"
        )
    filename = attrs.get("http.filename", "")
    if "/" in filename:
        raise ConfigError(
            f"{what}: attribute http.filename={filename!r} must be a file name, not a path"
        )
    perm = (
        parse_int(what, "http.perm", attrs["http.perm"], base=8) if "http.perm" in attrs else 0o600
    )
    uid = parse_int(what, "http.uid", attrs["http.uid"]) if "http.uid" in attrs else 0
    gid = parse_int(what, "http.gid", attrs["http.gid"]) if "http.gid" in attrs else 0
    return HTTPJob(identifier, checksum, filename, perm, uid, gid)


class HTTPSource(BuiltinSource, parser=parse_http):
    """Files downloaded over HTTP(S)."""
