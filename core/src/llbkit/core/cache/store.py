"""The cache store: layers on disk, results as chains of layers, and the keys that find them.

A result is an ordered chain of immutable layers (bottom first); merge concatenates chains and a
file op adds one layer, so neither copies what it did not change. Rows are written only after
the data they describe is in place, and removed before it goes, so a killed process never
leaves a record pointing at missing data (see ``docs/engine.md``).
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from array import array
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from llbkit.core.cache.leases import Lease, LeaseTable, current_lease
from llbkit.core.cache.root import StateRoot
from llbkit.core.errors import LlbkitError
from llbkit.core.fs.iterative import rmtree
from llbkit.core.plugins.progress import ProgressSink
from llbkit.core.snapshot.layers import apply_layer, disk_blocks, has_whiteouts
from llbkit.core.snapshot.mount import (
    MAX_OPTIONS,
    MountError,
    mount_overlay,
    overlay_options,
    unmount,
)

__all__ = [
    "BlobFetcher",
    "BlobFetchers",
    "Chain",
    "LayerInfo",
    "ShownWork",
    "Store",
    "WorkTree",
]

Chain = tuple[int, ...]

#: Reading through an overlay costs a lookup per layer for every path, so a deeper chain is
#: read from a flattened copy (hardlinks, made once and kept) rather than mounted.
_VIEW_DEPTH = 16


#: writes the blob ``digest`` into the file ``path``; returns its sha256 if it computed it
BlobFetcher = Callable[[str, Path], Awaitable[str | None]]


class ShownWork(ProgressSink, Protocol):
    """A :class:`~llbkit.core.plugins.progress.ProgressSink` for one piece of work, closed
    when it is over."""

    def close(self) -> None: ...


class BlobFetchers:
    """Where this process can download each lazy blob from: every open import that has it.

    Each import adds itself for its blobs and removes only itself when its build ends, so
    two builds importing one cache never take each other's way to a blob.
    """

    def __init__(self) -> None:
        self._by_digest: dict[str, list[BlobFetcher]] = {}
        self._shown: dict[BlobFetcher, Callable[[], ShownWork]] = {}

    def add(
        self,
        digests: Iterable[str],
        fetcher: BlobFetcher,
        shown: Callable[[], ShownWork] | None = None,
    ) -> None:
        """``fetcher`` can download ``digests``; ``shown`` makes where the work of fetching
        and unpacking one is shown (the step of the image it came from)."""
        for digest in digests:
            self._by_digest.setdefault(digest, []).append(fetcher)
        if shown is not None:
            self._shown[fetcher] = shown

    def remove(self, digests: Iterable[str], fetcher: BlobFetcher) -> None:
        for digest in digests:
            found = self._by_digest.get(digest, [])
            if fetcher in found:
                found.remove(fetcher)
            if not found:
                self._by_digest.pop(digest, None)
        self._shown.pop(fetcher, None)

    def shown(self, digest: str) -> ShownWork | None:
        """Where fetching ``digest`` and unpacking it are shown, if anywhere."""
        for fetcher in self._by_digest.get(digest, ()):
            if fetcher in self._shown:
                return self._shown[fetcher]()
        return None

    def get(self, digest: str) -> list[BlobFetcher]:
        return list(self._by_digest.get(digest, ()))

    def __contains__(self, digest: object) -> bool:
        return digest in self._by_digest


@dataclass(frozen=True)
class LayerInfo:
    """One layer as ``du`` shows it."""

    id: int
    parent: int | None
    size: int
    created: float
    last_used: float
    usage_count: int
    record_type: str
    description: str
    mutable: bool
    in_use: bool
    #: known by its blob only (imported from a remote cache, or an image no step read), and
    #: that blob not fetched yet either: nothing of it is here
    lazy: bool = False


def _probe_overlay(tmp: Path) -> bool:
    if os.geteuid() != 0:
        return False
    base = Path(tempfile.mkdtemp(dir=tmp))
    try:
        for name in ("l1", "l2", "u", "w", "m"):
            (base / name).mkdir()
        mount_overlay(base / "m", [base / "l2", base / "l1"], base / "u", base / "w")
        unmount(base / "m")
        return True
    except OSError:
        return False
    finally:
        rmtree(base, ignore_errors=True)


class _Probe:
    """:func:`_probe_overlay` on a thread of its own."""

    def __init__(self, tmp: Path) -> None:
        self._works = False
        self._thread = threading.Thread(target=self._run, args=(tmp,), name="overlay probe")
        self._thread.start()

    def _run(self, tmp: Path) -> None:
        self._works = _probe_overlay(tmp)

    def result(self) -> bool:
        self._thread.join()
        return self._works


class Store:
    """Layers, results and keys under one opened state root; safe to use from threads."""

    def __init__(self, root: StateRoot, *, layer_format: str | None = None) -> None:
        self.root = root
        self.db = root.db
        # One lock for the database and the leases: holding and deleting never interleave.
        self.lock = self.db.lock
        self.layers_dir = root.path / "layers"
        self.tmp = root.path / "tmp"
        self.empty = self.tmp / "empty"
        self.leases = LeaseTable(
            self.lock, on_add=self.db.add_lease_layers, on_release=self.db.drop_lease
        )
        self._spares: list[tuple[Path, Path]] = []
        #: held by whoever prunes: two prunes never race for the same records
        self.pruning = threading.Lock()
        self._digests: dict[int, Mapping[str, str]] = {}
        #: how to download the blobs of lazy layers, from the imports this process holds open
        #: (:mod:`llbkit.core.cache.lazy`)
        self.fetchers = BlobFetchers()
        self._fetch_locks: dict[str, anyio.Lock] = {}
        # The upper, work and target paths take part of the page mount(2) accepts.
        per_layer = len(str(self.layers_dir)) + 9
        room = MAX_OPTIONS - 3 * (len(str(self.tmp)) + 40) - len(overlay_options([]))
        self.max_depth = max(2, min(128, room // per_layer))
        known = self.db.setting("layer_format")
        self._format: str | None = known
        self._probe: _Probe | None = None
        if root.readonly:  # a view reads records and measures; it never makes layers
            self._format = known or layer_format or "oci"
            return
        self.layers_dir.mkdir(exist_ok=True)
        self.empty.mkdir(exist_ok=True)
        if known is None and layer_format is not None:
            self._chose(layer_format)
        elif known is None:
            # Mounting and unmounting take a few ms: on a new root the probe runs beside the
            # rest of the start, and what first needs the format waits for it.
            self._probe = _Probe(self.tmp)
        self._recover()

    @property
    def format(self) -> str:
        """How layers are kept: ``overlay`` (whiteouts as overlayfs reads them), or ``oci``."""
        if self._format is None:
            assert self._probe is not None
            self._chose("overlay" if self._probe.result() else "oci")
        assert self._format is not None
        return self._format

    def _chose(self, layer_format: str) -> None:
        with self.lock:
            if self._format is None:
                self.db.set_setting("layer_format", layer_format)
                self._format = layer_format

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        layer_format: str | None = None,
        wait: Callable[[str], None] | None = None,
    ) -> Store:
        """Open (lock, create, recover) the store at ``path``; ``wait`` as for
        :meth:`StateRoot.open`."""
        return cls(StateRoot.open(path, wait=wait), layer_format=layer_format)

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """A view of the store at ``path`` for :func:`~llbkit.core.cache.usage.disk_usage`
        beside another process that owns it; see :meth:`StateRoot.open_readonly`."""
        return cls(StateRoot.open_readonly(path))

    def close(self, *, checkpoint: bool = True) -> None:
        """Release the root (``checkpoint``: :meth:`StateDB.close`'s)."""
        if self._format is None and not self.root.readonly:
            self.format  # noqa: B018 - kept for the next open, and the probe's mount undone
        self.leases.close()
        self.root.close(checkpoint=checkpoint)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layers ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop rows whose directory is gone (but for lazy layers, which have none yet), then
        directories that have no row."""
        rows = self.db.layer_ids()
        lazy = self.db.lazy_layer_ids()
        on_disk = {int(p.name) for p in self.layers_dir.iterdir() if p.name.isdigit()}
        missing = rows - on_disk - lazy
        for layer in lazy & on_disk:  # filled when the process died: it is fetched again
            rmtree(self.layer_path(layer), ignore_errors=True)
        if missing:
            with self.db.transaction():
                for layer in missing:
                    self.db.forget_layer(layer)
        for extra in on_disk - rows:
            rmtree(self.layers_dir / str(extra), ignore_errors=True)
        for p in self.layers_dir.iterdir():
            if not p.name.isdigit():
                rmtree(p, ignore_errors=True)

    def stage(self) -> Path:
        """A new private directory under ``tmp/`` (emptied if the process dies); whoever makes
        one removes it (:meth:`staged` does)."""
        return Path(tempfile.mkdtemp(dir=self.tmp))

    @asynccontextmanager
    async def staged(self) -> AsyncIterator[Path]:
        """A new stage (:meth:`stage`) for the block, removed with whatever is left in it when
        the block ends, however it ends: a daemon's ``tmp/`` does not grow with its builds."""
        path = self.stage()
        try:
            yield path
        finally:
            try:
                path.rmdir()  # what was made in it was committed (moved out): the usual end
            except OSError:
                left = functools.partial(rmtree, path, ignore_errors=True)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(left)

    def layer_path(self, layer: int) -> Path:
        return self.layers_dir / str(layer)

    def commit_layer(
        self,
        tree: Path,
        *,
        parent: int | None = None,
        description: str = "",
        record_type: str = "regular",
        mutable: bool = False,
        hold: bool = False,
    ) -> int:
        """Move the finished directory ``tree`` into the store as a new layer; return its id
        (with ``hold``, held from the instant it exists: the caller releases it).

        Whether it holds whiteouts is looked for from the entries' types; its size is not
        counted (recorded as 0): ``du`` sizes every layer on disk and GC each new one once
        (:meth:`accounted_bytes`), and a stat of every entry of a large copy cost more than
        the rest of its commit."""
        size, whiteouts = 0, self._whiteouts(tree)
        with self.db.transaction():  # the row goes in only with the directory
            layer = self.db.insert_layer(
                parent=parent,
                size=size,
                record_type=record_type,
                description=description,
                mutable=mutable,
                whiteouts=whiteouts,
            )
            os.rename(tree, self.layer_path(layer))
            _hold_for_build((layer,))
            if hold:
                self.leases.acquire((layer,))
        return layer

    def _whiteouts(self, tree: Path) -> bool:
        return has_whiteouts(tree, self.format)

    def import_layer(
        self,
        *,
        parent: int | None,
        digest: str,
        diff_id: str,
        size: int,
        media_type: str,
        description: str,
        origin: str,
        created: float,
    ) -> int:
        """The layer whose blob is ``digest`` on top of ``parent``: one the store has, or a
        new lazy one (a row and the blob's description; its files come when first needed)."""
        compression = (
            "gzip" if "gzip" in media_type else "zstd" if "zstd" in media_type else "uncompressed"
        )
        with self.lock:
            known = self.db.layer_with_blob(digest, parent)
            if known is not None:
                _hold_for_build((known,))
                return known
            layer = self.db.insert_lazy_layer(
                parent=parent,
                size=size,
                description=description,
                digest=digest,
                diff_id=diff_id,
                media_type=media_type,
                variant=f"{compression}:None:None",
                origin=origin,
                created=created,
            )
            _hold_for_build((layer,))
            return layer

    def fetch_lock(self, name: str) -> anyio.Lock:
        """One fetch of a blob or layer at a time, however many builds need it."""
        lock = self._fetch_locks.get(name)
        if lock is None:
            lock = self._fetch_locks[name] = anyio.Lock()
        return lock

    def lazy(self, chain: Sequence[int]) -> dict[int, tuple[str, str]]:
        """The layers of ``chain`` not fetched yet: each one's blob digest and media type."""
        return self.db.lazy_layers(chain)

    def fill_layer(self, layer: int, tree: Path) -> None:
        """Move the unpacked files of lazy ``layer`` into place; it is an ordinary layer now."""
        size, whiteouts = 0, self._whiteouts(tree)  # the size as commit_layer records it
        with self.db.transaction():
            if not self.db.lazy_layers((layer,)):
                rmtree(tree, ignore_errors=True)  # fetched meanwhile
                return
            os.rename(tree, self.layer_path(layer))
            self.db.fetched_layer(layer, size, whiteouts)

    def aliases(self, result: str) -> list[str]:
        """Every key that finds the result named ``result``."""
        return self.db.result_aliases(result)

    # -- results and keys -----------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the records written in the block one transaction (one commit, not many)."""
        with self.db.transaction():
            yield

    def save_result(self, key: str, chain: Chain) -> None:
        """Record ``chain`` as the result named by the portable ``key``."""
        self.db.save_result(key, chain)

    def link_key(self, key: str, result: str, vertex_name: str, explanation: str) -> None:
        """Make ``key`` (a definition key or a content key) find ``result``."""
        self.db.link_key(key, result, vertex_name, explanation)

    def find_stack(self, diff_ids: Sequence[str]) -> Chain:
        """The layers this store has for the bottom of an image made of ``diff_ids`` (bottom
        first), each on the one before: as many as it has, marked used and held for the
        running build (BuildKit finds a snapshot by the chain id these make)."""
        found: list[int] = []
        with self.lock:
            for diff_id in diff_ids:
                layer = self.db.layer_with(found[-1] if found else None, diff_id)
                if layer is None:
                    break
                found.append(layer)
            if found:
                self.db.touch_layers(found)
                _hold_for_build(found)
        return tuple(found)

    def lookup(self, key: str) -> tuple[str, Chain] | None:
        """The result a key finds (its portable key and chain), marking its layers used."""
        with self.lock:
            found = self.db.lookup(key)
            if found is not None:
                self.db.touch_layers(found[1])
                _hold_for_build(found[1])
            return found

    # -- views ----------------------------------------------------------------------------

    def lease(self, name: str) -> Lease:
        """A new lease (see :mod:`llbkit.core.cache.leases`); bind it to a build's tasks."""
        return self.leases.lease(name)

    @contextmanager
    def hold(self, chain: Sequence[int]) -> Iterator[None]:
        """Keep ``chain``'s layers from being pruned while the block runs."""
        self.leases.acquire(chain)
        try:
            yield
        finally:
            self.leases.release(chain)

    @contextmanager
    def view(self, chain: Chain, *, depth: int = _VIEW_DEPTH) -> Iterator[Path]:
        """A read-only directory showing ``chain``'s tree for the duration of the block
        (``depth``: the most layers mounted rather than flattened)."""
        with self.hold(chain):
            if not chain:
                yield self.empty
            elif len(chain) == 1 and not self._has_whiteouts(chain[0]):
                yield self.layer_path(chain[0])
            elif (
                self.format == "overlay" and len(chain) <= depth and not self.stray_whiteouts(chain)
            ):
                stage = self.stage()
                target = stage / "m"
                target.mkdir()
                mount_overlay(target, [self.layer_path(i) for i in reversed(chain)])
                try:
                    yield target
                finally:
                    unmount(target)
                    rmtree(stage, ignore_errors=True)
            else:
                flat = self.flatten(chain, hold=True)
                try:
                    yield self.layer_path(flat)
                finally:
                    self.leases.release((flat,))

    def _has_whiteouts(self, layer: int) -> bool:
        return self.db.has_whiteouts(layer)

    def stray_whiteouts(self, chain: Chain) -> bool:
        """Whether a layer with whiteouts sits on another base than the one it was made on.

        Overlay lists such a layer's whiteouts in directories no lower layer has (they only
        hide entries at lookup), so that chain is shown flattened instead of mounted.
        """
        rows = self.db.parents_and_whiteouts(chain)
        for n, layer in enumerate(chain):
            parent, whiteouts = rows.get(layer, (None, False))
            if whiteouts and (n == 0 or parent != chain[n - 1]):
                return True
        return False

    def flatten(self, chain: Chain, *, hold: bool = False) -> int:
        """One layer holding ``chain``'s whole tree (files hardlinked), made once and kept.

        Like every layer found or made, it joins the running build's lease at once; with
        ``hold``, it is also held (for the caller to release) from that same instant.
        """
        if self.db.lazy_layers(chain):  # a caller forgot materialize(): say so, not ENOENT
            raise LlbkitError(f"layers {sorted(self.db.lazy_layers(chain))} are not fetched yet")
        with self.lock:
            known = self.db.flat(chain)
            if known is not None:
                _hold_for_build((known,))
                if hold:
                    self.leases.acquire((known,))
                return known
        stage = self.stage()
        tree = stage / "flat"
        tree.mkdir()
        for layer in chain:
            apply_layer(self.layer_path(layer), tree, self.format, hardlink=True)
        layer = self.commit_layer(tree, description="flattened layers", hold=hold)
        from llbkit.core.cache.shares import record_flat

        record_flat(self, layer, chain)
        self.db.save_flat(chain, layer)
        rmtree(stage, ignore_errors=True)
        return layer

    def compact(self, chain: Chain) -> Chain:
        """``chain``, with its lower part flattened when it is too deep to mount."""
        if self.format != "overlay":
            return chain if len(chain) <= 1 else (self.flatten(chain),)
        if len(chain) <= self.max_depth:
            return chain
        return (self.flatten(chain[:-1]), chain[-1])

    def spare_dirs(self) -> tuple[Path, Path]:
        """An overlay work directory and an empty mount point, reused between mounts."""
        with self.lock:
            if self._spares:
                return self._spares.pop()
        base = self.stage()
        (base / "w").mkdir()
        (base / "m").mkdir()
        return base / "w", base / "m"

    def return_spare(self, dirs: tuple[Path, Path]) -> None:
        with self.lock:
            self._spares.append(dirs)

    def remember_digests(self, layer: int, digests: Mapping[str, str]) -> None:
        """Content checksums of a new layer's entries that its maker knew (a local context's
        mirror summed them): a copy's key reads them instead of walking the layer again.
        Kept for the last few layers only (what the builds under way copy from)."""
        with self.lock:
            self._digests[layer] = digests
            while len(self._digests) > 8:
                self._digests.pop(next(iter(self._digests)))

    def known_digests(self, chain: Chain) -> Mapping[str, str] | None:
        """What :meth:`remember_digests` holds for a chain of one such layer."""
        with self.lock:
            return self._digests.get(chain[0]) if len(chain) == 1 else None

    def hash_cache(self) -> MutableMapping[tuple[int, int, int, int], str]:
        """Content digests of layer files by inode, kept across builds (layers never change,
        so a file's digest is computed once however many copies read it)."""
        return _HashCache(self)

    def work_tree(self, chain: Chain, description: str = "", *, defer: bool = False) -> WorkTree:
        """A writable tree seeded with ``chain``; commit it to get the new chain.

        ``defer``: leave an overlay unmounted (:attr:`WorkTree.deferred`) for its first writes
        to go straight into the upper directory, where files can be hard-linked.
        """
        return WorkTree(self, chain, description, defer=defer)

    # -- disk usage and pruning ------------------------------------------------------------

    def layers(self, *, walk: bool = True) -> list[LayerInfo]:
        """Every layer with the disk it really uses (shared inodes counted once, in the oldest
        layer holding them; oldest first). Without ``walk``, sizes 0: :meth:`accounted_bytes`
        has their sum.

        A layer GC has counted (:meth:`accounted_bytes`) is sized from its counted inodes,
        others by a walk: the same figures as walking every layer, without the walk.

        A layer is in use while this process holds it or a lease holds it (leases are how a
        read-only view in another process sees what the owner's builds hold). A layer deleted
        while it is walked (by the owner, beside a read-only view) counts 0.
        """
        rows = self.db.layer_rows()
        in_use = self.db.leased_layers()
        with self.lock:
            in_use.update(self.leases.held())
        counted, inode_sizes = self.db.counted_inodes() if walk else ({}, {})
        blobs = self.db.layer_blob_sizes()
        seen: set[int] = set()
        seen_blobs: set[str] = set()
        found = []
        for row in rows:
            path = self.layer_path(row.id)
            size = _first_held(path, counted.get(row.id), inode_sizes, seen) if walk else 0
            if not path.is_dir():
                size = 0
            # As BuildKit sizes a record: its files and its blobs (each compression of it
            # kept), a blob two layers have counted in the first.
            for digest, blob_size in blobs.get(row.id, ()) if walk else ():
                if digest not in seen_blobs:
                    seen_blobs.add(digest)
                    size += blob_size
            found.append(
                LayerInfo(
                    id=row.id,
                    parent=row.parent,
                    size=size,
                    created=row.created,
                    last_used=row.last_used,
                    usage_count=row.usage_count,
                    record_type=row.record_type,
                    description=row.description,
                    mutable=row.mutable,
                    in_use=row.id in in_use,
                    lazy=row.lazy and row.id not in blobs,
                )
            )
        return found

    def accounted_bytes(self) -> int:
        """What :meth:`layers` sums to (every inode once, however many layers share it),
        without walking them all: each layer is measured once in its life, the first time
        this is asked after it was made, and counted out once it is gone. The owner's GC asks
        it before deciding whether it must walk the store."""
        rows = self.db.layer_rows()
        present = {row.id for row in rows if not row.lazy}  # a lazy layer has no files yet
        accounted = self.db.accounted_layers()
        for layer in accounted - present:
            self.db.unaccount_layer(layer)
        for layer in sorted(present - accounted):
            path = self.layer_path(layer)
            if path.is_dir():
                self.db.account_layer(layer, _inode_bytes(path))
        return self.db.accounted_bytes() + self.db.named_blobs_size()

    def delete_layer(self, layer: int) -> bool:
        """Forget a layer (and the results needing it), then remove its directory; a layer
        that something holds now is kept (``False``)."""
        # Under the lock a blob is adopted and named under: no layer takes one being deleted.
        with self.lock:
            with self.db.transaction():
                if self.leases.is_held(layer):
                    return False
                blobs = self.db.layer_blob_digests(layer)
                self.db.forget_layer(layer)  # rows first: a record never names a missing file
            # Its blobs no other layer has go with it, as BuildKit's content goes with the
            # last record that leases it.
            for digest in self.db.unnamed_blobs(blobs):
                self.root.content.delete(digest)
        path = self.layer_path(layer)
        doomed = self.tmp / f"deleting-{layer}"
        if path.exists():
            os.rename(path, doomed)
            rmtree(doomed, ignore_errors=True)
        return True

    def drop_unnamed_blobs(self) -> list[str]:
        """Delete the blobs no layer has (a compression a layer's row was replaced for, an
        export's blob made only for it), while no build holds anything: a running export may
        be reading one. Returns their digests."""
        with self.lock:
            if self.leases.held() or self.db.leased_layers():
                return []
            gone = self.db.unnamed_blobs()
            for digest in gone:
                self.root.content.delete(digest)
        return gone

    def last_gc(self) -> float | None:
        """When GC last ran on this root (seconds since the epoch), if ever."""
        return self.db.last_gc()

    def set_last_gc(self, when: float) -> None:
        self.db.set_last_gc(when)


def _first_held(
    path: Path, counted: bytes | None, inode_sizes: Mapping[int, int], seen: set[int]
) -> int:
    """The bytes of the layer's inodes that no layer before it (``seen``) holds, from its
    counted inodes if it has them (and every one's size is known), else by walking it."""
    if counted is not None:
        inodes = array("Q")
        inodes.frombytes(counted)
        fresh = set(inodes).difference(seen)
        if fresh.issubset(inode_sizes.keys()):
            seen.update(fresh)
            return sum(inode_sizes[i] for i in fresh)
    walked = _inode_bytes(path)
    size = sum(b for i, b in walked.items() if i not in seen)
    seen.update(walked)
    return size


def _inode_bytes(path: Path) -> dict[int, int]:
    """The bytes each inode of the tree ``path`` occupies, as :func:`disk_blocks` counts them
    (every layer is on the store's one filesystem: the inode number is enough)."""
    found: dict[int, int] = {}

    def visit(_: str, st: os.stat_result) -> None:
        found[st.st_ino] = st.st_blocks * 512

    disk_blocks(path, set(), visit)
    return found


def _hold_for_build(chain: Sequence[int]) -> None:
    """Add what was just committed or found to the running build's lease, if any (called with
    the store's lock held, so GC never sees it unheld)."""
    lease = current_lease.get()
    if lease is not None:
        lease.add(chain)


class _HashCache(MutableMapping[tuple[int, int, int, int], str]):
    def __init__(self, store: Store) -> None:
        self.store = store

    def __getitem__(self, key: tuple[int, int, int, int]) -> str:
        digest = self.store.db.file_hash(key)
        if digest is None:
            raise KeyError(key)
        return digest

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __setitem__(self, key: tuple[int, int, int, int], value: str) -> None:
        self.store.db.save_file_hash(key, value)

    def __delitem__(self, key: tuple[int, int, int, int]) -> None:
        self.store.db.forget_file_hash(key)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        return iter(())

    def __len__(self) -> int:
        return 0


class WorkTree:
    """A writable tree for one step: an overlay upper over the chain, or a plain copy of it.

    A deferred overlay tree is not mounted until :meth:`mount`: until then :attr:`upper` may be
    written directly, and :attr:`lower` shows the chain read-only (the upper starts empty, so
    that is the tree).
    """

    def __init__(
        self, store: Store, chain: Chain, description: str, *, defer: bool = False
    ) -> None:
        self.store = store
        self.chain = chain
        self.description = description
        self._upper = Path(tempfile.mkdtemp(dir=store.tmp, prefix="upper-"))
        self._upper.chmod(0o755)  # a tree's root, as in every image
        self._mounted: Path | None = None
        self._spare: tuple[Path, Path] | None = None
        self._lower: ExitStack | None = None
        #: with :attr:`deferred`: the directory to write, and the chain's tree below it
        self.upper = self._upper
        self.lower = store.empty
        self._closed = False
        self._hold = store.hold(chain)
        self._hold.__enter__()
        if not chain:
            self.path = self._upper
        elif store.format == "overlay":
            chain = store.compact(chain)
            if store.stray_whiteouts(chain):
                chain = (store.flatten(chain),)
            self.chain = chain
            self._spare = store.spare_dirs()
            self.path = self._spare[1]
            if defer:
                # Mounted as the tree will be (a few lookups along the copy's paths).
                self._lower = ExitStack()
                self.lower = self._lower.enter_context(store.view(chain, depth=store.max_depth))
                self.upper = self._upper
            else:
                self.mount()
        else:
            for layer in chain:
                apply_layer(store.layer_path(layer), self._upper, store.format)
            self.chain = ()
            self.path = self._upper

    @property
    def deferred(self) -> bool:
        """Whether the overlay waits to be mounted (see :meth:`mount`)."""
        return self._lower is not None

    def mount(self) -> Path:
        """Mount the overlay over what the upper holds so far; return :attr:`path`."""
        if self._mounted is not None or not self.chain or self._spare is None:
            return self.path
        if self._lower is not None:
            self._lower.close()
            self._lower = None
        work, target = self._spare
        try:
            mount_overlay(
                target, [self.store.layer_path(i) for i in reversed(self.chain)], self._upper, work
            )
        except MountError:
            self.close()
            raise
        self._mounted = target
        return target

    def commit(self, record_type: str = "regular") -> Chain:
        """Turn what was written into a layer on top of the chain; return the new chain."""
        if self._mounted is not None:
            unmount(self._mounted)
            self._mounted = None
        if self._lower is not None:
            self._lower.close()
            self._lower = None
        parent = self.chain[-1] if self.chain else None
        layer = self.store.commit_layer(
            self._upper, parent=parent, description=self.description, record_type=record_type
        )
        self.close()
        return self.store.compact((*self.chain, layer))

    def close(self) -> None:
        """Give up the tree (after a commit, or instead of one)."""
        if self._closed:
            return
        self._closed = True
        if self._mounted is not None:
            with suppress(OSError):
                unmount(self._mounted)
            self._mounted = None
        if self._lower is not None:
            with suppress(OSError):
                self._lower.close()
            self._lower = None
        if self._upper.exists():
            rmtree(self._upper, ignore_errors=True)
        if self._spare is not None:
            self.store.return_spare(self._spare)
            self._spare = None
        self._hold.__exit__(None, None, None)
