"""Image configs from the client's OCI layouts beside the registries': what a frontend asks
for as ``oci-layout://STORE@DIGEST`` (the source identifier an OCI layout image has) is read
from the layout the client shares as STORE, as BuildKit's ``ResolveImageConfig`` reads it
when asked for the OCI layout resolver; any other reference goes to the registries."""

from __future__ import annotations

from llbkit.core.plugins.context import ClientIO, Platform
from llbkit.core.plugins.source import ImageConfig, ImageResolver, ResolveMode

__all__ = ["LAYOUT_SCHEME", "WithLayouts"]

LAYOUT_SCHEME = "oci-layout://"


class WithLayouts:
    """An :class:`ImageResolver` that also reads the OCI layouts of one build's client."""

    def __init__(self, registries: ImageResolver, session: ClientIO) -> None:
        self._registries = registries
        self._session = session

    async def resolve_image_config(
        self, ref: str, platform: Platform, mode: ResolveMode = "default"
    ) -> ImageConfig:
        if not ref.startswith(LAYOUT_SCHEME):
            return await self._registries.resolve_image_config(ref, platform, mode)
        from llbkit.core.sources.oci_layout import parse_oci_layout

        job = parse_oci_layout(ref, {}, platform)
        return ImageConfig(job.digest, await job.image_config(self._session))
