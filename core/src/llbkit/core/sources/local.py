"""``local://<name>`` sources: a directory the client exposes (``--local name=path``)."""

from __future__ import annotations

import hashlib
import itertools
import json
import marshal
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from llbkit.core.cache.usage import GENERATION
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

_T = TypeVar("_T")

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
    _digests: dict[str, str] = field(default_factory=dict, compare=False)
    #: whom the key's sync tells what it moved (one at most)
    _shows: list[Callable[[int], None]] = field(default_factory=list, compare=False)

    @property
    def key_status(self) -> str:
        """Keying a local source syncs its mirror: shown as BuildKit shows the transfer."""
        return f"transferring {self.name}:"

    def show_moved(self, show: Callable[[int], None]) -> None:
        self._shows[:] = [show]

    def inode_pool(self) -> str | None:
        """Layers fetched from one mirror share its files' inodes (named once fetched)."""
        return self._keys.get("pool")

    def _mirror(self, client: ClientIO, spare: int = 0) -> Path:
        if self.state_dir is None:
            raise UserError(f"{self.identifier}: local sources need a state directory")
        ident = json.dumps(
            [
                client.local_identity(self.name),
                self.include_patterns,
                self.exclude_patterns,
                *([self.follow_paths] if self.follow_paths else []),
                *([spare] if spare else []),
            ],
        )
        return self.state_dir / hashlib.sha256(ident.encode()).hexdigest()[:32]

    def _held_mirror(self, client: ClientIO) -> Path:
        """The mirror this job keys and fetches from, held until it is done with it: the
        identity's own, or, while another build holds that one (two of buildctl's builds
        at once, which share an identity), the first spare nobody holds, as BuildKit takes
        another of its shared key's mutable refs when one is in use."""
        if "mirror" not in self._keys:
            mirror = next(
                m for n in itertools.count() if (m := self._mirror(client, n)) not in _HELD
            )
            _HELD.add(mirror)
            self._keys["mirror"] = str(mirror)
        return Path(self._keys["mirror"])

    def discard(self) -> None:
        """The build is done with the vertex: its mirror may be another build's."""
        if (mirror := self._keys.pop("mirror", None)) is not None:
            _HELD.discard(Path(mirror))

    async def cache_key(self, client: ClientIO) -> str:
        """Mirror the client's directory, then key it by content (never by session)."""
        mirror = self._held_mirror(client)
        async with _lock_for(mirror):
            tree = mirror / "tree"
            summed, generation = await anyio.to_thread.run_sync(_unsum, mirror)
            crossed: list[int] = []  # the client's count of what crossed, if it counts

            def moving(n: int) -> None:
                crossed[:] = [n]
                for show in self._shows:
                    show(n)

            changed = await client.sync_local(
                self.name,
                tree,
                include=self.include_patterns,
                exclude=self.exclude_patterns,
                follow_paths=self.follow_paths,
                progress=moving,
            )
            if self._shows:  # the transfer's end, before the sum (as BuildKit ends it)
                moved = crossed[0] if crossed else None
                if moved is None:
                    moved = await anyio.to_thread.run_sync(_file_bytes, tree, changed)
                for show in self._shows:
                    show(moved)
            known = summed if changed is not None else None
            summed_now: dict[str, str] = {}
            checksum = await anyio.to_thread.run_sync(
                _checksum, mirror, known, changed, generation, summed_now
            )
        self._keys["checksum"] = checksum
        # what the sum just found: the fetch need not read it back from the mirror's file
        self._digests.clear()
        self._digests.update(summed_now)
        return f"local:{checksum}"

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        from llbkit.core.snapshot.layers import apply_layer

        mirror = self._held_mirror(client)
        async with _lock_for(mirror):
            # The mirror may have been synced again since this build keyed it (another build
            # of the same directory): a result is never made of files its key does not name.
            if "checksum" in self._keys:
                now = await anyio.to_thread.run_sync(_current, mirror)
                if now != self._keys["checksum"]:
                    raise UserError(
                        f"local directory {self.name!r} changed while the build ran (another "
                        "build synced it meanwhile); build again"
                    )
            # Links, no stat each: the store looks for whiteouts by the entries' types.
            await anyio.to_thread.run_sync(
                lambda: apply_layer(mirror / "tree", dest, "plain", hardlink=True)
            )
            self._keys["pool"] = f"local:{mirror.name}"
            if "checksum" in self._keys and not self._digests:
                self._digests.update(await anyio.to_thread.run_sync(_entry_digests, mirror))

    def tree_digests(self) -> Mapping[str, str] | None:
        """The fetched tree's entries' checksums, as the mirror's sum found them (the tree's
        root left out: the fetched root is not the mirror's)."""
        return self._digests or None


def _file_bytes(tree: Path, changed: Collection[str] | None) -> int:
    """The bytes of the files a sync wrote (all of them, when it cannot say which)."""
    import stat

    paths: Iterable[Path]
    if changed is None:
        paths = (Path(top) / name for top, _, names in os.walk(tree) for name in names)
    else:
        paths = (tree / path for path in changed)
    total = 0
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:  # removed by the sync
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


def _entry_digests(mirror: Path) -> dict[str, str]:
    return _entries(_load(mirror / "summed").get("digests", {}))


def _entries(digests: dict[str, str]) -> dict[str, str]:
    """A sum's checksums without the tree's root (the fetched root is not the mirror's)."""
    digests.pop("", None)
    return digests


def _unsum(mirror: Path) -> tuple[str | None, str | None]:
    """The checksum of the tree as last summed and its ``generation``, both forgotten before
    a sync changes the tree: a sync that stops halfway leaves neither, so the next one sums
    the whole tree, and ``du`` measures it again."""
    found: list[str | None] = []
    for name in ("checksum", GENERATION):
        try:
            found.append((mirror / name).read_text())
        except OSError:
            found.append(None)
        else:
            (mirror / name).unlink()
    return found[0], found[1]


def _current(mirror: Path) -> str:
    try:
        return (mirror / "checksum").read_text()
    except OSError:
        return _checksum(mirror, None, None)


def _checksum(
    mirror: Path,
    summed: str | None,
    changed: Collection[str] | None,
    generation: str | None = None,
    digests: dict[str, str] | None = None,
) -> str:
    """The content checksum of ``mirror``'s tree.

    With the checksum of the tree before a sync and what the sync changed, only the changed
    entries and their directories are summed again; otherwise the whole tree is walked, files
    whose stat did not change not read again (the stat cache). A tree that changed gets a new
    ``generation`` (what ``du`` keys its measurement by); one that did not keeps its own.
    ``digests``, if given, receives the entries' checksums when they were summed (the tree's
    root left out), as :func:`_entry_digests` would read them back.
    """
    from llbkit.core.fs.contenthash import ContentHasher
    from llbkit.core.fs.received import ReceivedDigests

    if summed is not None and changed is not None and not changed and generation is not None:
        _write(mirror / "checksum", summed.encode())
        _write(mirror / GENERATION, generation.encode())
        return summed
    saved = _load(mirror / "summed")
    stat_cache = {k: v for k, v in saved.get("stat", {}).items() if len(v) == 5}
    known: dict[str, str] | None = None
    if summed is not None and changed is not None:
        known = _still_valid(mirror / "tree", saved.get("digests", {}), changed)
    hasher = ContentHasher(
        mirror / "tree",
        stat_cache=stat_cache,
        replaced_only=True,
        known=known,
        # what a session's receiver just wrote (llbkitd) is not read back to be hashed
        inode_cache=ReceivedDigests(),
    )
    checksum = str(hasher.checksum("/"))
    if known is None:  # the whole tree was hashed: what it did not visit is gone
        live = {k: v for k, v in stat_cache.items() if k in hasher.visited}
    else:
        live = _still_valid(mirror / "tree", stat_cache, changed or ())
        live.update((k, stat_cache[k]) for k in hasher.visited if k in stat_cache)
    summed_digests = hasher.digests()
    _write(mirror / "summed", marshal.dumps({"stat": live, "digests": summed_digests}))
    if digests is not None:
        digests.update(_entries(dict(summed_digests)))
    _write(mirror / "checksum", checksum.encode())
    _write(mirror / GENERATION, os.urandom(16).hex().encode())
    return checksum


def _still_valid(tree: Path, by_path: Mapping[str, _T], changed: Collection[str]) -> dict[str, _T]:
    """``by_path`` without the changed paths and the directories above them, nor what was
    below a changed path that is no directory now (what is below a directory that stays one
    and changed is named on its own)."""
    drop = {""}
    gone = []
    for path in changed:
        parts = path.split("/")
        drop.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
        if not os.path.isdir(tree / path) or os.path.islink(tree / path):
            gone.append(f"{path}/")
    below = tuple(gone)
    return {
        k: v for k, v in by_path.items() if k not in drop and not (below and k.startswith(below))
    }


def _load(path: Path) -> dict[str, Any]:
    """What the last checksum saved (marshal: ten times json's speed on 5,000 entries; the
    file is the engine's own, and one an upgraded Python cannot read only costs a walk)."""
    try:
        saved = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


_LOCKS: dict[Path, anyio.Lock] = {}
#: mirrors a build has keyed and not yet fetched from or let go of
_HELD: set[Path] = set()


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
