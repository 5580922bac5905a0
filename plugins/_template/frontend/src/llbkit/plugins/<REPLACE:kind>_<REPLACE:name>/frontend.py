"""An example frontend: its build file is one line, ``<path>: <text>``, and the build's result is
a filesystem holding that one file.

A frontend only describes the build: it reads its file through the client (the user's directory
may be on another machine) and returns LLB, made with ``llbkit.sdk.llb``; the engine builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.plugins import FrontendClient, FrontendOutput, PluginContext
from llbkit.sdk import llb

OPTIONS = ("filename", "mode")
#: BuildKit's name for the client directory that holds the build file (``--local dockerfile=.``)
CONTEXT = "dockerfile"


def parse(text: str, filename: str) -> tuple[str, bytes, int]:
    """``<path>: <text>`` -> (path, content, number of further lines, which are not read)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{filename} is empty; write one line: <path>: <text>")
    path, sep, content = lines[0].partition(":")
    if not sep or not path.strip():
        raise UserError(f"{filename}:1: expected <path>: <text>, got {lines[0]!r}")
    return path.strip(), content.strip().encode() + b"\n", len(lines) - 1


@dataclass(frozen=True)
class <REPLACE:Name>Job:
    """One build request: which file to read and how to make the result."""

    filename: str
    mode: int

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        try:
            text = (await client.read_file(CONTEXT, self.filename)).decode()
        except UnicodeDecodeError:
            raise UserError(f"{self.filename} is not UTF-8 text") from None
        path, content, ignored = parse(text, self.filename)
        if ignored:
            client.warn(f"{self.filename}: {ignored} line(s) after the first are not read")
        state = llb.scratch().file(llb.mkfile("/" + path.lstrip("/"), self.mode, content))
        platform = llb.Platform()
        return FrontendOutput({str(platform): state.marshal(platform).to_bytes()})


class <REPLACE:Name>Frontend:
    """Constructed once per engine; ``resolve`` runs once per build, before any file is read."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> <REPLACE:Name>Job:
        for key in attrs:
            if key not in OPTIONS:
                raise UnknownOptionError(f"frontend {self.ctx.name}", key, OPTIONS)
        try:
            mode = int(attrs.get("mode", "644"), 8)
        except ValueError:
            raise ConfigError(
                f"frontend {self.ctx.name}: mode={attrs['mode']!r} is not an octal file mode"
            ) from None
        return <REPLACE:Name>Job(attrs.get("filename", "Buildfile"), mode)
