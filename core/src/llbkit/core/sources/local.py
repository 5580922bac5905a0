"""``local://<name>`` sources: a directory the client exposes (``--local name=path``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from llbkit.core.errors import UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    choice,
    json_list,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform
    from llbkit.core.plugins.progress import ProgressSink

_KNOWN = (
    "local.session",
    "local.unique",
    "local.includepattern",
    "local.excludepatterns",
    "local.followpaths",
    "local.sharedkeyhint",
    "local.differ",
    "local.metadatatransfer",
    "local.metadatatransferexclude",
)


@dataclass(frozen=True)
class LocalJob(ParsedSource):
    record_type = "source.local"

    identifier: str
    name: str
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    follow_paths: tuple[str, ...] = ()
    shared_key_hint: str = ""
    session: str = ""
    differ: str = "metadata"
    state_dir: Path | None = None
    #: what this job keyed its mirror by, checked again before its files are used
    _keys: dict[str, str] = field(default_factory=dict, compare=False)

    def inode_pool(self) -> str | None:
        """Layers fetched from one mirror share its files' inodes (named once fetched)."""
        return self._keys.get("pool")

    def _mirror(self, client: ClientIO) -> Path:
        if self.state_dir is None:
            raise UserError(f"{self.identifier}: local sources need a state directory")
        ident = json.dumps(
            [
                client.local_identity(self.name),
                self.include_patterns,
                self.exclude_patterns,
                *([self.follow_paths] if self.follow_paths else []),
            ],
        )
        return self.state_dir / hashlib.sha256(ident.encode()).hexdigest()[:32]

    async def cache_key(self, client: ClientIO) -> str:
        """Mirror the client's directory, then key it by content (never by session)."""
        mirror = self._mirror(client)
        async with _lock_for(mirror):
            tree = mirror / "tree"
            await client.sync_local(
                self.name,
                tree,
                include=self.include_patterns,
                exclude=self.exclude_patterns,
                follow_paths=self.follow_paths,
            )
            checksum = await anyio.to_thread.run_sync(_checksum, mirror)
        self._keys["checksum"] = checksum
        return f"local:{checksum}"

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        from llbkit.core.snapshot.layers import apply_layer

        mirror = self._mirror(client)
        async with _lock_for(mirror):
            # The mirror may have been synced again since this build keyed it (another build
            # of the same directory): a result is never made of files its key does not name.
            if "checksum" in self._keys:
                now = await anyio.to_thread.run_sync(_checksum, mirror)
                if now != self._keys["checksum"]:
                    raise UserError(
                        f"local directory {self.name!r} changed while the build ran (another "
                        "build synced it meanwhile); build again"
                    )
            await anyio.to_thread.run_sync(
                lambda: apply_layer(mirror / "tree", dest, "plain", hardlink=True)
            )
            self._keys["pool"] = f"local:{mirror.name}"


def _checksum(mirror: Path) -> str:
    """The content checksum of ``mirror``'s tree, files whose stat did not change not read
    again (the stat cache beside it)."""
    from llbkit.core.fs.contenthash import ContentHasher

    cache_file = mirror / "stat-cache.json"
    stat_cache: dict[str, tuple[int, int, int, int, str]]
    try:
        stat_cache = {
            k: (v[0], v[1], v[2], v[3], v[4]) for k, v in json.loads(cache_file.read_text()).items()
        }
    except (OSError, ValueError, RecursionError, IndexError, AttributeError):
        stat_cache = {}
    hasher = ContentHasher(mirror / "tree", stat_cache=stat_cache, replaced_only=True)
    checksum = hasher.checksum("/")
    # The whole tree was hashed: what it did not visit is gone.
    live = {k: v for k, v in stat_cache.items() if k in hasher.visited}
    tmp = cache_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(live))
    tmp.replace(cache_file)
    return str(checksum)


_LOCKS: dict[Path, anyio.Lock] = {}


def _lock_for(path: Path) -> anyio.Lock:
    return _LOCKS.setdefault(path, anyio.Lock())


def parse_local(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> LocalJob:
    _, name = strip_scheme(identifier, {"local"})
    what = f"source {identifier}"
    if not name:
        raise UserError(f"invalid source identifier {identifier!r}: the local name is empty")
    check_attrs(what, attrs, "local.", _KNOWN)
    return LocalJob(
        identifier,
        name,
        json_list(what, "local.includepattern", attrs.get("local.includepattern")),
        json_list(what, "local.excludepatterns", attrs.get("local.excludepatterns")),
        json_list(what, "local.followpaths", attrs.get("local.followpaths")),
        attrs.get("local.sharedkeyhint", ""),
        attrs.get("local.session", ""),
        choice(
            what,
            "local.differ",
            attrs.get("local.differ", "metadata") or "metadata",
            {"none", "metadata"},
        ),
    )


class LocalSource(BuiltinSource, parser=parse_local):
    """Files from the client's machine."""
