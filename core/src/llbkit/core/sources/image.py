"""``docker-image://`` sources: a reference, normalized as Docker does, and its resolve mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llbkit.core.reference import Reference, parse_reference
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    choice,
    parse_int,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform

_KNOWN = ("image.resolvemode", "image.recordtype", "image.layerlimit", "image.checksum")


@dataclass(frozen=True)
class ImageJob(ParsedSource):
    identifier: str
    reference: Reference
    platform: Platform | None
    resolve_mode: str = "default"
    record_type: str = "regular"
    layer_limit: int | None = None


def parse_image(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> ImageJob:
    _, rest = strip_scheme(identifier, {"docker-image"})
    what = f"source {identifier}"
    check_attrs(what, attrs, "image.", _KNOWN)
    mode = choice(
        what,
        "image.resolvemode",
        attrs.get("image.resolvemode", "default"),
        {"default", "pull", "local"},
    )
    record = choice(
        what,
        "image.recordtype",
        attrs.get("image.recordtype", "regular"),
        {"regular", "internal", "frontend"},
    )
    limit = attrs.get("image.layerlimit")
    layer_limit = parse_int(what, "image.layerlimit", limit, low=1) if limit is not None else None
    return ImageJob(identifier, parse_reference(rest), platform, mode, record, layer_limit)


class ImageSource(BuiltinSource, parser=parse_image):
    """Container images from registries."""
