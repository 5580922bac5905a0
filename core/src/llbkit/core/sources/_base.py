"""What the built-in sources share: attribute checking and the not-yet-fetching job."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform, PluginContext
    from llbkit.core.plugins.progress import ProgressSink


def image_key(digest: str, platform: Platform, limit: int | None) -> str:
    """BuildKit's cache key of an image source, from a registry or an OCI layout alike: the
    manifest digest, the platform, and the layer limit when one is set."""
    import hashlib

    key: dict[str, object] = {"Digest": digest, "OS": platform.os, "Arch": platform.architecture}
    if platform.variant:
        key["Variant"] = platform.variant
    if limit is not None:
        key["Limit"] = limit
    data = json.dumps(key, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_attrs(what: str, attrs: Mapping[str, str], prefix: str, known: Collection[str]) -> None:
    """Refuse attributes in the source's own namespace (``git.``...) that it does not know.

    Attributes of other namespaces are left alone: BuildKit ignores them too.
    """
    for key in sorted(attrs):
        if key.startswith(prefix) and key not in known:
            raise UnknownOptionError(what, key, known)


def json_list(what: str, key: str, value: str | None) -> tuple[str, ...]:
    """Decode an attribute that BuildKit carries as a JSON array of strings."""
    if value is None or value == "":
        return ()
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{what}: attribute {key} is not a JSON array: {err}") from None
    if not isinstance(decoded, list) or not all(isinstance(v, str) for v in decoded):
        raise ConfigError(f"{what}: attribute {key} must be a JSON array of strings")
    return tuple(decoded)


def parse_int(what: str, key: str, value: str, *, base: int = 10, low: int = 0) -> int:
    """Decode a numeric attribute, naming it when it is not a number or too small."""
    try:
        number = int(value, base)
    except ValueError:
        raise ConfigError(f"{what}: attribute {key}={value!r} is not a number") from None
    if number < low:
        raise ConfigError(f"{what}: attribute {key}={value!r} must be at least {low}")
    return number


def choice(what: str, key: str, value: str, allowed: Collection[str]) -> str:
    """Check an attribute that takes one of a few words."""
    if value not in allowed:
        raise ConfigError(
            f"{what}: attribute {key}={value!r} is not one of {', '.join(sorted(allowed))}"
        )
    return value


@runtime_checkable
class MirroredJob(Protocol):
    """A source job whose tree is linked from a mirror the engine keeps (a local context):
    what the fetch learned, handed to the store so it is not walked again."""

    def inode_pool(self) -> str | None:
        """The mirror whose files' inodes the fetched layer shares (named once fetched)."""
        ...

    def tree_digests(self) -> Mapping[str, str] | None:
        """The fetched tree's entries' checksums, as the mirror's sum found them."""
        ...

    def show_moved(self, show: Callable[[int], None]) -> None:
        """Have ``show(n)`` called as the key's sync of the mirror moves bytes, and once more
        at its end with all it moved: what crossed from the client, counted as BuildKit
        counts it, or, when nothing crossed a connection, the bytes of the files written."""
        ...


class ParsedSource:
    """A source vertex whose identifier and attributes have been checked.

    Kinds this release cannot fetch yet keep these defaults, so a build that reaches one says
    so in one line instead of failing obscurely.
    """

    identifier: str
    #: what ``du`` calls what this source makes
    record_type: str = "regular"

    def discard(self) -> None:
        """Nothing fetched for the key is kept by default."""

    async def cache_key(self, client: ClientIO) -> str:
        raise UserError(
            f"{self.identifier}: fetching this kind of source is not in this release of llbkit"
        )

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        raise UserError(
            f"{self.identifier}: fetching this kind of source is not in this release of llbkit"
        )


Parser = Callable[[str, Mapping[str, str], "Platform | None"], "ParsedSource"]


class BuiltinSource:
    """The driver side shared by the built-ins: construct once, resolve per vertex."""

    api_version: ClassVar[int] = 2
    _parsers: ClassVar[dict[type, Parser]] = {}

    def __init_subclass__(cls, *, parser: Parser) -> None:
        BuiltinSource._parsers[cls] = parser

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> ParsedSource:
        job = self._parsers[type(self)](identifier, attrs, platform)
        if "state_dir" in {f.name for f in dataclasses.fields(job)}:  # type: ignore[arg-type]
            job = dataclasses.replace(job, state_dir=self.ctx.state_dir)  # type: ignore[type-var]
        return job


def strip_scheme(identifier: str, schemes: Collection[str]) -> tuple[str, str]:
    """Split ``scheme://rest``, refusing a scheme this source does not serve."""
    scheme, sep, rest = identifier.partition("://")
    if not sep or scheme not in schemes:
        expected = " or ".join(f"{s}://" for s in sorted(schemes))
        raise UserError(f"invalid source identifier {identifier!r}: expected {expected}")
    return scheme, rest
