"""An example source: ``<scheme>://NAME`` is a filesystem holding one file, the value of the
engine's environment variable ``NAME``.

The scheme and the attribute namespace (``<scheme>.filename``) are the entry-point name the
engine constructed the source with (``ctx.name``), so renaming the entry point renames both.
The job's key is computed from the content itself: the same on every machine for the same
value, and a changed value is a new key, so the step runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins import ClientIO, Platform, PluginContext, ProgressSink

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class <REPLACE:Name>Job:
    """One source vertex: the value, read when the vertex was resolved, and where it goes."""

    value: bytes
    filename: str
    mode: int
    record_type: str = "regular"

    async def cache_key(self, client: ClientIO) -> str:
        content = hashlib.sha256(self.value).hexdigest()
        key = {"content": content, "filename": self.filename, "mode": self.mode}
        data = json.dumps(key, sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        target = dest / self.filename
        target.write_bytes(self.value)
        target.chmod(self.mode)

    def discard(self) -> None:
        return None


class <REPLACE:Name>Source:
    """Constructed once per engine; ``resolve`` runs for each source vertex of a build."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> <REPLACE:Name>Job:
        scheme = self.ctx.name
        what = f"source {identifier}"
        known = (f"{scheme}.filename", f"{scheme}.mode")
        for key in sorted(attrs):
            # Other namespaces' attributes are not ours to judge (BuildKit ignores them too).
            if key.startswith(f"{scheme}.") and key not in known:
                raise UnknownOptionError(what, key, known)
        prefix, sep, name = identifier.partition("://")
        if prefix != scheme or not sep or not _VARIABLE.fullmatch(name):
            raise UserError(
                f"invalid source identifier {identifier!r}: expected {scheme}://NAME, NAME "
                "being an environment variable"
            )
        value = os.environ.get(name)
        if value is None:
            raise UserError(f"{what}: the engine has no environment variable {name}")
        filename = attrs.get(f"{scheme}.filename", name)
        if filename in ("", ".", "..") or "/" in filename:
            raise ConfigError(f"{what}: {scheme}.filename={filename!r} is not a file name")
        try:
            mode = int(attrs.get(f"{scheme}.mode", "644"), 8)
        except ValueError:
            raise ConfigError(f"{what}: {scheme}.mode is not an octal file mode") from None
        return <REPLACE:Name>Job(value.encode(), filename, mode)
