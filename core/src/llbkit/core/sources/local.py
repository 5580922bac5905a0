"""``local://<name>`` sources: a directory the client exposes (``--local name=path``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llbkit.core.errors import UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    choice,
    json_list,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform

_KNOWN = (
    "local.session",
    "local.unique",
    "local.includepattern",
    "local.excludepatterns",
    "local.followpaths",
    "local.sharedkeyhint",
    "local.differ",
    "local.metadatatransfer",
    "local.metadatatransferexclude",
)


@dataclass(frozen=True)
class LocalJob(ParsedSource):
    identifier: str
    name: str
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    follow_paths: tuple[str, ...] = ()
    shared_key_hint: str = ""
    session: str = ""
    differ: str = "metadata"


def parse_local(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> LocalJob:
    _, name = strip_scheme(identifier, {"local"})
    what = f"source {identifier}"
    if not name:
        raise UserError(f"invalid source identifier {identifier!r}: the local name is empty")
    check_attrs(what, attrs, "local.", _KNOWN)
    return LocalJob(
        identifier,
        name,
        json_list(what, "local.includepattern", attrs.get("local.includepattern")),
        json_list(what, "local.excludepatterns", attrs.get("local.excludepatterns")),
        json_list(what, "local.followpaths", attrs.get("local.followpaths")),
        attrs.get("local.sharedkeyhint", ""),
        attrs.get("local.session", ""),
        choice(
            what,
            "local.differ",
            attrs.get("local.differ", "metadata") or "metadata",
            {"none", "metadata"},
        ),
    )


class LocalSource(BuiltinSource, parser=parse_local):
    """Files from the client's machine."""
