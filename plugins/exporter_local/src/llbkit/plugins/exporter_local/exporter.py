"""``--output type=local`` and ``type=tar``: a result as a directory or a tarball on the client.

Both go through :class:`~llbkit.core.plugins.ClientIO`, so with a daemon the files land on the
client's machine, not the daemon's.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError
from llbkit.core.gotar import GoTarInfo, whole_seconds
from llbkit.core.plugins import BuildResult, ExportInfo, PluginContext

OPTIONS = ("dest", "platform-split")


def _bool(ctx: PluginContext, attrs: Mapping[str, str], key: str) -> bool | None:
    if key not in attrs:
        return None
    value = attrs[key].lower()
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ConfigError(f"exporter {ctx.name}: {key}={attrs[key]!r} is not true or false")


def _check(ctx: PluginContext, attrs: Mapping[str, str]) -> tuple[str, bool | None]:
    for key in attrs:
        if key not in OPTIONS:
            raise UnknownOptionError(f"exporter {ctx.name}", key, OPTIONS)
    if not attrs.get("dest"):
        raise ConfigError(f"exporter {ctx.name}: dest= is required")
    return attrs["dest"], _bool(ctx, attrs, "platform-split")


def _split(result: BuildResult, platform_split: bool | None) -> bool:
    return result.is_map if platform_split is None else platform_split


def _subdir(platform: str) -> str:
    return platform.replace("/", "_")


@dataclass(frozen=True)
class LocalExportJob:
    dest: str
    platform_split: bool | None
    description: str = "exporting to client directory"

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        split = _split(result, self.platform_split)
        # A result of nothing (scratch) is an empty directory, as BuildKit leaves one.
        for platform in sorted(result.platforms) or [""]:
            dest = os.path.join(self.dest, _subdir(platform)) if split else self.dest
            info.progress.status("copying files")
            ref = result.refs.get(platform)
            if ref is None:
                with tempfile.TemporaryDirectory() as empty:
                    await info.client.write_tree(dest, Path(empty))
            else:
                async with ref.mount() as tree:
                    await info.client.write_tree(dest, tree)
            info.progress.status("copying files", done=True)
        return {}

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class TarExportJob:
    dest: str
    platform_split: bool | None
    description: str = "exporting to client tarball"

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        split = _split(result, self.platform_split)
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(
                fileobj=spool, mode="w", format=tarfile.PAX_FORMAT, tarinfo=GoTarInfo
            ) as tar:
                for platform, ref in sorted(result.refs.items()):
                    async with ref.mount() as tree:
                        prefix = _subdir(platform) if split else ""
                        await anyio.to_thread.run_sync(_add_tree, tar, tree, prefix)
            # Go's writer ends with its two zero blocks; tarfile pads on to a 10 KiB record.
            spool.truncate(tar.offset)
            spool.seek(0)
            info.progress.status("sending tarball")
            async with info.client.open_output(self.dest) as out:
                while chunk := spool.read(1 << 20):
                    await out.write(chunk)
            info.progress.status("sending tarball", done=True)
        return {}

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


def _add_tree(tar: tarfile.TarFile, tree: Path, prefix: str) -> None:
    """Add every entry below ``tree`` (not the root itself), depth first in name order, as
    BuildKit's walker does."""
    if prefix:
        # A platform's folder is made up, as BuildKit makes it: 0755, root's, dated 1970.
        info = GoTarInfo(prefix)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    _add_subtree(tar, tree, "", prefix)


def _add_subtree(tar: tarfile.TarFile, tree: Path, rel: str, prefix: str) -> None:
    # A stack of the directories entered, each with the names still to add: a tree may nest
    # thousands of directories deep, past Python's recursion limit.
    pending = [(rel, sorted(os.listdir(os.path.join(tree, rel)), reverse=True))]
    while pending:
        base, names = pending[-1]
        if not names:
            pending.pop()
            continue
        name = names.pop()
        sub = os.path.join(base, name)
        path = os.path.join(tree, sub)
        info = tar.gettarinfo(path, os.path.join(prefix, sub))
        st = os.lstat(path)
        if info is None:
            # A socket (a RUN's): BuildKit's walker clears the socket bit, making it an empty
            # file with the socket's permissions.
            info = GoTarInfo(os.path.join(prefix, sub))
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = whole_seconds(st.st_mtime_ns)
        info.uname = info.gname = ""
        if info.isreg() and info.size:
            with open(path, "rb") as data:
                tar.addfile(info, data)
        else:
            tar.addfile(info)
        if info.isdir():
            pending.append((sub, sorted(os.listdir(path), reverse=True)))


class LocalExporter:
    """``type=local``: the result's files in a directory on the client."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> LocalExportJob:
        return LocalExportJob(*_check(self.ctx, attrs))


class TarExporter:
    """``type=tar``: the result's files as one tarball, to a file or standard output."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> TarExportJob:
        return TarExportJob(*_check(self.ctx, attrs))
