"""Image references, parsed and normalized as Docker does (`alpine` → `docker.io/library/alpine`).

Sources, the registry client and the SDK all need the same answer, so it lives in core.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llbkit.core.errors import UserError

__all__ = ["DEFAULT_DOMAIN", "Reference", "ReferenceError", "parse_reference"]

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL_PREFIX = "library/"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_NAME_MAX = 255


class ReferenceError(UserError):
    """An image reference that Docker would not accept."""


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path``, the repository."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form Docker shows (``alpine:latest``)."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            path = path.removeprefix(_OFFICIAL_PREFIX)
            text = path
        else:
            text = f"{self.domain}/{path}"
        return (
            text + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        )


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    return domain, path


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize ``text``; with ``default_tag``, no tag and no digest means ``latest``.

    Raises :class:`ReferenceError` naming the reference and what is wrong with it.
    """
    if not text:
        raise ReferenceError("invalid image reference '': it is empty")
    match = _REFERENCE.match(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE.match(lowered):
            raise ReferenceError(
                f"invalid image reference {text!r}: repository name must be lowercase"
            )
        raise ReferenceError(
            f"invalid image reference {text!r}: not of the form [host/]name[:tag][@digest]"
        )
    name = match["name"]
    if len(name) > _NAME_MAX:
        raise ReferenceError(
            f"invalid image reference {text!r}: repository name longer than {_NAME_MAX}"
        )
    domain, path = _split_domain(name)
    tag = match["tag"] or ""
    digest = match["digest"] or ""
    if default_tag and not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)
