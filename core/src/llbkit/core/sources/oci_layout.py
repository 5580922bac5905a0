"""``oci-layout://<store>@<digest>`` sources: an image from an OCI layout the client exposes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llbkit.core.errors import UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    parse_int,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform

_KNOWN = ("oci.session", "oci.store", "oci.layerlimit")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class OCILayoutJob(ParsedSource):
    identifier: str
    store: str
    digest: str
    platform: Platform | None
    session: str = ""
    layer_limit: int | None = None


def parse_oci_layout(
    identifier: str, attrs: Mapping[str, str], platform: Platform | None
) -> OCILayoutJob:
    _, rest = strip_scheme(identifier, {"oci-layout"})
    what = f"source {identifier}"
    check_attrs(what, attrs, "oci.", _KNOWN)
    store, sep, digest = rest.rpartition("@")
    if not sep or not store or not _DIGEST.match(digest):
        raise UserError(
            f"invalid source identifier {identifier!r}: "
            "expected oci-layout://<store>@sha256:<64 hex digits>"
        )
    limit = attrs.get("oci.layerlimit")
    layer_limit = parse_int(what, "oci.layerlimit", limit, low=1) if limit is not None else None
    return OCILayoutJob(
        identifier,
        attrs.get("oci.store", store),
        digest,
        platform,
        attrs.get("oci.session", ""),
        layer_limit,
    )


class OCILayoutSource(BuiltinSource, parser=parse_oci_layout):
    """Images from an OCI image layout (``--oci-layout name=path``)."""
