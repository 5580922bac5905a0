"""The cache store: layers on disk, results as chains of layers, and the keys that find them.

A result is an ordered chain of immutable layers (bottom first); merge concatenates chains and a
file op adds one layer, so neither copies what it did not change. Rows are written only after
the data they describe is in place, and removed before it goes, so a killed process never
leaves a record pointing at missing data (see ``docs/engine.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from llbkit.core.cache.leases import Lease, LeaseTable, current_lease
from llbkit.core.cache.root import StateRoot
from llbkit.core.snapshot.layers import apply_layer, disk_blocks, measure
from llbkit.core.snapshot.mount import (
    MAX_OPTIONS,
    MountError,
    mount_overlay,
    overlay_options,
    unmount,
)

__all__ = ["Chain", "LayerInfo", "Store", "WorkTree"]

Chain = tuple[int, ...]

#: Reading through an overlay costs a lookup per layer for every path, so a deeper chain is
#: read from a flattened copy (hardlinks, made once and kept) rather than mounted.
_VIEW_DEPTH = 16


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
        shutil.rmtree(base, ignore_errors=True)


class Store:
    """Layers, results and keys under one opened state root; safe to use from threads."""

    def __init__(self, root: StateRoot, *, layer_format: str | None = None) -> None:
        self.root = root
        self.db = root.db
        self.lock = threading.RLock()
        self.layers_dir = root.path / "layers"
        self.tmp = root.path / "tmp"
        self.layers_dir.mkdir(exist_ok=True)
        self.empty = self.tmp / "empty"
        self.empty.mkdir(exist_ok=True)
        self.leases = LeaseTable(self.lock)
        self._spares: list[tuple[Path, Path]] = []
        row = self.db.execute("SELECT value FROM settings WHERE name='layer_format'").fetchone()
        if row is not None:
            self.format = row[0]
        else:
            self.format = layer_format or ("overlay" if _probe_overlay(self.tmp) else "oci")
            self.db.execute(
                "INSERT INTO settings(name, value) VALUES ('layer_format', ?)", (self.format,)
            )
        # The upper, work and target paths take part of the page mount(2) accepts.
        per_layer = len(str(self.layers_dir)) + 9
        room = MAX_OPTIONS - 3 * (len(str(self.tmp)) + 40) - len(overlay_options([]))
        self.max_depth = max(2, min(128, room // per_layer))
        self._recover()

    @classmethod
    def open(cls, path: Path, *, layer_format: str | None = None) -> Store:
        """Open (lock, create, recover) the store at ``path``."""
        return cls(StateRoot.open(path), layer_format=layer_format)

    def close(self) -> None:
        self.root.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layers ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop rows whose directory is gone, then directories that have no row."""
        rows = {r[0] for r in self.db.execute("SELECT id FROM layers")}
        on_disk = {int(p.name) for p in self.layers_dir.iterdir() if p.name.isdigit()}
        missing = rows - on_disk
        if missing:
            with self._tx():
                for layer in missing:
                    self._forget_layer(layer)
        for extra in on_disk - rows:
            shutil.rmtree(self.layers_dir / str(extra), ignore_errors=True)
        for p in self.layers_dir.iterdir():
            if not p.name.isdigit():
                shutil.rmtree(p, ignore_errors=True)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _forget_layer(self, layer: int) -> None:
        """Delete a layer's row and every result that needs it (inside a transaction)."""
        results = [
            r[0]
            for r in self.db.execute("SELECT result FROM result_layers WHERE layer=?", (layer,))
        ]
        for key in results:
            self.db.execute("DELETE FROM results WHERE key=?", (key,))
        for chain, flat in self.db.execute("SELECT chain, layer FROM flats").fetchall():
            if flat == layer or layer in json.loads(chain):
                self.db.execute("DELETE FROM flats WHERE chain=?", (chain,))
        self.db.execute("UPDATE layers SET parent=NULL WHERE parent=?", (layer,))
        self.db.execute("DELETE FROM layers WHERE id=?", (layer,))

    def stage(self) -> Path:
        """A new private directory under ``tmp/`` (emptied if the process dies)."""
        return Path(tempfile.mkdtemp(dir=self.tmp))

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
    ) -> int:
        """Move the finished directory ``tree`` into the store as a new layer; return its id."""
        size, whiteouts = measure(tree, self.format)
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO layers(parent, size, created, last_used, usage_count, record_type,"
                " description, mutable, whiteouts) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (parent, size, now, now, record_type, description, int(mutable), whiteouts),
            )
            layer = int(cur.lastrowid or 0)
            os.rename(tree, self.layer_path(layer))
            _hold_for_build((layer,))
        return layer

    # -- results and keys -----------------------------------------------------------------

    def save_result(self, key: str, chain: Chain) -> None:
        """Record ``chain`` as the result named by the portable ``key``."""
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM results WHERE key=?", (key,))
            db.execute(
                "INSERT INTO results(key, chain, created) VALUES (?, ?, ?)",
                (key, json.dumps(list(chain)), now),
            )
            db.executemany(
                "INSERT INTO result_layers(result, layer) VALUES (?, ?)",
                [(key, layer) for layer in set(chain)],
            )

    def link_key(self, key: str, result: str, vertex_name: str, explanation: str) -> None:
        """Make ``key`` (a definition key or a content key) find ``result``."""
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO keys(key, result, vertex_name, explanation, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, result, vertex_name, explanation, time.time()),
            )

    def lookup(self, key: str) -> tuple[str, Chain] | None:
        """The result a key finds (its portable key and chain), marking its layers used."""
        with self.lock:
            row = self.db.execute(
                "SELECT r.key, r.chain FROM keys k JOIN results r ON r.key = k.result"
                " WHERE k.key=?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            chain: Chain = tuple(json.loads(row[1]))
            self._touch(chain)
            _hold_for_build(chain)
            return row[0], chain

    def _touch(self, chain: Chain) -> None:
        if not chain:
            return
        marks = ",".join("?" * len(chain))
        self.db.execute(
            f"UPDATE layers SET last_used=?, usage_count=usage_count+1 WHERE id IN ({marks})",
            (time.time(), *chain),
        )

    def explanation(self, key: str) -> str | None:
        row = self.db.execute("SELECT explanation FROM keys WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

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
    def view(self, chain: Chain) -> Iterator[Path]:
        """A read-only directory showing ``chain``'s tree for the duration of the block."""
        with self.hold(chain):
            if not chain:
                yield self.empty
            elif len(chain) == 1 and not self._has_whiteouts(chain[0]):
                yield self.layer_path(chain[0])
            elif (
                self.format == "overlay"
                and len(chain) <= _VIEW_DEPTH
                and not self.stray_whiteouts(chain)
            ):
                stage = self.stage()
                target = stage / "m"
                target.mkdir()
                mount_overlay(target, [self.layer_path(i) for i in reversed(chain)])
                try:
                    yield target
                finally:
                    unmount(target)
                    shutil.rmtree(stage, ignore_errors=True)
            else:
                flat = self.flatten(chain)
                with self.hold((flat,)):
                    yield self.layer_path(flat)

    def _has_whiteouts(self, layer: int) -> bool:
        with self.lock:
            row = self.db.execute("SELECT whiteouts FROM layers WHERE id=?", (layer,)).fetchone()
        return bool(row and row[0])

    def stray_whiteouts(self, chain: Chain) -> bool:
        """Whether a layer with whiteouts sits on another base than the one it was made on.

        Overlay lists such a layer's whiteouts in directories no lower layer has (they only
        hide entries at lookup), so that chain is shown flattened instead of mounted.
        """
        marks = ",".join("?" * len(chain))
        with self.lock:
            rows = {
                r[0]: (r[1], r[2])
                for r in self.db.execute(
                    f"SELECT id, parent, whiteouts FROM layers WHERE id IN ({marks})", chain
                )
            }
        for n, layer in enumerate(chain):
            parent, whiteouts = rows.get(layer, (None, 0))
            if whiteouts and (n == 0 or parent != chain[n - 1]):
                return True
        return False

    def flatten(self, chain: Chain) -> int:
        """One layer holding ``chain``'s whole tree (files hardlinked), made once and kept."""
        name = json.dumps(list(chain))
        with self.lock:
            row = self.db.execute("SELECT layer FROM flats WHERE chain=?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        stage = self.stage()
        tree = stage / "flat"
        tree.mkdir()
        for layer in chain:
            apply_layer(self.layer_path(layer), tree, self.format, hardlink=True)
        layer = self.commit_layer(tree, description="flattened layers")
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO flats(chain, layer) VALUES (?, ?)", (name, layer)
            )
        shutil.rmtree(stage, ignore_errors=True)
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

    def hash_cache(self) -> MutableMapping[tuple[int, int, int, int], str]:
        """Content digests of layer files by inode, kept across builds (layers never change,
        so a file's digest is computed once however many copies read it)."""
        return _HashCache(self)

    def work_tree(self, chain: Chain, description: str = "") -> WorkTree:
        """A writable tree seeded with ``chain``; commit it to get the new chain."""
        return WorkTree(self, chain, description)

    # -- disk usage and pruning ------------------------------------------------------------

    def layers(self) -> list[LayerInfo]:
        """Every layer with the disk it really uses (shared inodes counted once, oldest first)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT id, parent, created, last_used, usage_count, record_type, description,"
                " mutable FROM layers ORDER BY id"
            ).fetchall()
            in_use = self.leases.held()
        seen: set[tuple[int, int]] = set()
        found = []
        for row in rows:
            size = disk_blocks(self.layer_path(row[0]), seen)
            found.append(
                LayerInfo(
                    id=row[0],
                    parent=row[1],
                    size=size,
                    created=row[2],
                    last_used=row[3],
                    usage_count=row[4],
                    record_type=row[5],
                    description=row[6],
                    mutable=bool(row[7]),
                    in_use=row[0] in in_use,
                )
            )
        return found

    def children_of(self) -> set[int]:
        """Layers that another layer names as its parent."""
        with self.lock:
            return {
                r[0]
                for r in self.db.execute(
                    "SELECT DISTINCT parent FROM layers WHERE parent IS NOT NULL"
                )
            }

    def delete_layer(self, layer: int) -> bool:
        """Forget a layer (and the results needing it), then remove its directory; a layer
        that something holds now is kept (``False``)."""
        with self._tx():
            if self.leases.is_held(layer):
                return False
            self._forget_layer(layer)
        path = self.layer_path(layer)
        doomed = self.tmp / f"deleting-{layer}"
        if path.exists():
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        return True

    def last_gc(self) -> float | None:
        """When GC last ran on this root (seconds since the epoch), if ever."""
        with self.lock:
            row = self.db.execute("SELECT value FROM settings WHERE name='last_gc'").fetchone()
        return None if row is None else float(row[0])

    def set_last_gc(self, when: float) -> None:
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO settings(name, value) VALUES ('last_gc', ?)", (str(when),)
            )

    def content_size(self) -> int:
        return self.root.content.total_size()


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
        with self.store.lock:
            row = self.store.db.execute(
                "SELECT digest FROM file_hashes WHERE dev=? AND ino=? AND mtime=? AND size=?",
                key,
            ).fetchone()
        if row is None:
            raise KeyError(key)
        return str(row[0])

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __setitem__(self, key: tuple[int, int, int, int], value: str) -> None:
        with self.store.lock:
            self.store.db.execute(
                "INSERT OR REPLACE INTO file_hashes(dev, ino, mtime, size, digest)"
                " VALUES (?, ?, ?, ?, ?)",
                (*key, value),
            )

    def __delitem__(self, key: tuple[int, int, int, int]) -> None:
        with self.store.lock:
            self.store.db.execute(
                "DELETE FROM file_hashes WHERE dev=? AND ino=? AND mtime=? AND size=?", key
            )

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        return iter(())

    def __len__(self) -> int:
        return 0


class WorkTree:
    """A writable tree for one step: an overlay upper over the chain, or a plain copy of it."""

    def __init__(self, store: Store, chain: Chain, description: str) -> None:
        self.store = store
        self.chain = chain
        self.description = description
        self._upper = Path(tempfile.mkdtemp(dir=store.tmp, prefix="upper-"))
        self._upper.chmod(0o755)  # a tree's root, as in every image
        self._mounted: Path | None = None
        self._spare: tuple[Path, Path] | None = None
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
            work, target = self._spare
            try:
                mount_overlay(
                    target, [store.layer_path(i) for i in reversed(chain)], self._upper, work
                )
            except MountError:
                self.close()
                raise
            self._mounted = self.path = target
        else:
            for layer in chain:
                apply_layer(store.layer_path(layer), self._upper, store.format)
            self.chain = ()
            self.path = self._upper

    def commit(self, record_type: str = "regular") -> Chain:
        """Turn what was written into a layer on top of the chain; return the new chain."""
        if self._mounted is not None:
            unmount(self._mounted)
            self._mounted = None
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
        if self._upper.exists():
            shutil.rmtree(self._upper, ignore_errors=True)
        if self._spare is not None:
            self.store.return_spare(self._spare)
            self._spare = None
        self._hold.__exit__(None, None, None)
