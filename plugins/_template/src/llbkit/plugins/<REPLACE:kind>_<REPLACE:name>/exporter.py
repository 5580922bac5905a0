"""An example exporter: writes a JSON listing of the result's files to ``dest`` on the client.

Replace the body with the real work; keep the two stages: ``resolve`` checks every option before
the build runs, the job does the work after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.plugins import BuildResult, ExportInfo, PluginContext

OPTIONS = ("dest",)


@dataclass(frozen=True)
class <REPLACE:Name>ExportJob:
    dest: str

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        listing = {}
        for platform, ref in sorted(result.refs.items()):
            async with ref.mount() as root:
                listing[platform] = sorted(
                    os.path.relpath(os.path.join(d, f), root)
                    for d, _, files in os.walk(root)
                    for f in files
                )
        async with info.client.open_output(self.dest) as out:
            await out.write(json.dumps(listing, indent=2).encode() + b"\n")
        return {"<REPLACE:name>.files": str(sum(len(v) for v in listing.values()))}

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


class <REPLACE:Name>Exporter:
    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> <REPLACE:Name>ExportJob:
        for key in attrs:
            if key not in OPTIONS:
                raise UnknownOptionError(f"exporter {self.ctx.name}", key, OPTIONS)
        if not attrs.get("dest"):
            raise ConfigError(f"exporter {self.ctx.name}: dest= is required")
        return <REPLACE:Name>ExportJob(attrs["dest"])
