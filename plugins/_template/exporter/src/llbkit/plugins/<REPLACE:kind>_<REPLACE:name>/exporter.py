"""An example exporter: writes a JSON listing of the result's files to ``dest`` on the client.

Keep the two stages when replacing the body: ``resolve`` checks every option before the build
runs, the job does the work once the build succeeded. Anything bound for the user's machine goes
through ``info.client``, never ``open()``: with a daemon, the client is elsewhere.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.plugins import BuildResult, ExportInfo, PluginContext

OPTIONS = ("dest", "sizes")


def _listing(root: Path, sizes: bool) -> dict[str, int] | list[str]:
    """Regular files below ``root``, relative and sorted (with their sizes if asked)."""
    found = {}
    for top, _, names in os.walk(root):
        for name in names:
            # lstat: a symlink's target may lie outside the result, on this machine.
            info = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(info.st_mode):
                found[os.path.relpath(os.path.join(top, name), root)] = info.st_size
    return dict(sorted(found.items())) if sizes else sorted(found)


@dataclass(frozen=True)
class <REPLACE:Name>ExportJob:
    """One export: where the listing goes and what it holds."""

    dest: str
    sizes: bool
    #: this export's step in the build's progress
    description: str = "exporting a listing of the files"

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        listing = {}
        for platform, ref in sorted(result.refs.items()):
            info.progress.status(f"listing {platform}")
            async with ref.mount() as root:
                # A large tree takes a while to walk: keep the event loop free meanwhile.
                listing[platform] = await anyio.to_thread.run_sync(_listing, root, self.sizes)
            info.progress.status(f"listing {platform}", done=True)
        async with info.client.open_output(self.dest) as out:
            await out.write(json.dumps(listing, indent=2).encode() + b"\n")
        return {"listing.files": str(sum(len(files) for files in listing.values()))}

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


class <REPLACE:Name>Exporter:
    """Constructed once per engine; ``resolve`` runs once per ``--output``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> <REPLACE:Name>ExportJob:
        for key in attrs:
            if key not in OPTIONS:
                raise UnknownOptionError(f"exporter {self.ctx.name}", key, OPTIONS)
        if not attrs.get("dest"):
            raise ConfigError(f"exporter {self.ctx.name}: dest= is required (- for stdout)")
        sizes = attrs.get("sizes", "false").lower()
        if sizes not in ("", "true", "false"):  # a bare `sizes` means true, as in BuildKit
            raise ConfigError(f"exporter {self.ctx.name}: sizes={sizes!r} is not true or false")
        return <REPLACE:Name>ExportJob(attrs["dest"], sizes != "false")
