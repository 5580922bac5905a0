"""``type=inline``: no store of its own; the engine embeds the records in the exported images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.plugins import PluginContext
from llbkit.core.plugins.cache_backend import Direction, EmbedInImage
from llbkit.core.plugins.context import ClientIO

#: inline caches take no attributes of their own
OPTIONS: tuple[str, ...] = ()


class InlineCacheBackend:
    """Answers every export with :class:`EmbedInImage`; refuses imports with the way to do one."""

    api_version: ClassVar[int] = 3

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(
        self, attrs: Mapping[str, str], direction: Direction, client: ClientIO
    ) -> EmbedInImage:
        for key in attrs:
            raise UnknownOptionError(f"cache backend {self.ctx.name}", key, OPTIONS)
        if direction == "import":
            raise ConfigError(
                f"cache backend {self.ctx.name} exports only: import an image's inline cache "
                "with --import-cache type=registry,ref=<image>"
            )
        return EmbedInImage(self.ctx.name)
