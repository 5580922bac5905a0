"""The state root's database: the one module that speaks SQL.

The schema, its version and every query the store, the content store, layer blobs and the
engine need live here, one method per query, so a change of schema touches one file. A row and
the data it describes change together inside :meth:`StateDB.transaction` (rows after data on
insert, rows before data on delete; see ``docs/engine.md``).

The owner opens the file read-write and upgrades it in place. Readers that must never wait
(``du`` beside a running build) open it with ``mode=ro`` and take no lock: in WAL mode they
read the last committed state while the owner writes. Tables an older root lacks are stood in
for by empty temporary ones, so a reader runs the same queries on any version it understands.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from llbkit.core.errors import LlbkitError

__all__ = ["SCHEMA_VERSION", "LayerRow", "NewerSchemaError", "StateDB"]

#: 3: ``lease_layers``; 4: ``lazy_layers``.
SCHEMA_VERSION = 4

_TABLES = {
    "blobs": """
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        last_used REAL NOT NULL""",
    "settings": "name TEXT PRIMARY KEY, value TEXT NOT NULL",
    "layers": """
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        parent INTEGER,
        size INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        last_used REAL NOT NULL,
        usage_count INTEGER NOT NULL DEFAULT 0,
        record_type TEXT NOT NULL DEFAULT 'regular',
        description TEXT NOT NULL DEFAULT '',
        mutable INTEGER NOT NULL DEFAULT 0,
        whiteouts INTEGER NOT NULL DEFAULT 0""",
    "results": "key TEXT PRIMARY KEY, chain TEXT NOT NULL, created REAL NOT NULL",
    "result_layers": """
        result TEXT NOT NULL REFERENCES results(key) ON DELETE CASCADE,
        layer INTEGER NOT NULL""",
    "keys": """
        key TEXT PRIMARY KEY,
        result TEXT NOT NULL REFERENCES results(key) ON DELETE CASCADE,
        vertex_name TEXT NOT NULL DEFAULT '',
        explanation TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL""",
    "file_hashes": """
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        mtime INTEGER NOT NULL,
        size INTEGER NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (dev, ino, mtime, size)""",
    "flats": "chain TEXT PRIMARY KEY, layer INTEGER NOT NULL",
    "blob_sources": """
        digest TEXT NOT NULL,
        host TEXT NOT NULL,
        repo TEXT NOT NULL,
        PRIMARY KEY (digest, host, repo)""",
    "layer_blobs": """
        layer INTEGER NOT NULL,
        variant TEXT NOT NULL,
        digest TEXT NOT NULL,
        diff_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (layer, variant)""",
    # Layers a live process holds for a client; meaningless once that process is gone.
    "lease_layers": "lease TEXT NOT NULL, layer INTEGER NOT NULL",
    # Inodes a layer shares with other layers (llbkit.core.cache.shares): each row names a pool
    # of inodes and the inode numbers of the layer in it (NULL: any of its files may be).
    "layer_pools": """
        layer INTEGER NOT NULL,
        pool TEXT NOT NULL,
        inodes BLOB,
        PRIMARY KEY (layer, pool)""",
    # The disk the layers use, each inode once (what du's walk counts), kept up to date by GC:
    # each layer's inode numbers once it was measured, and each inode's bytes and how many of
    # those layers hold it (llbkit.core.cache.store.Store.accounted_bytes).
    "layer_inodes": "layer INTEGER PRIMARY KEY, inodes BLOB NOT NULL",
    "inode_bytes": "ino INTEGER PRIMARY KEY, bytes INTEGER NOT NULL, refs INTEGER NOT NULL",
    # Layers imported from a remote cache and not fetched yet: a row, a blob, no directory.
    "lazy_layers": """
        layer INTEGER PRIMARY KEY,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL DEFAULT ''""",
}
_INDEXES = {
    "layers_parent": "layers(parent)",
    "result_layers_layer": "result_layers(layer)",
    "result_layers_result": "result_layers(result)",
    "keys_result": "keys(result)",
    "flats_layer": "flats(layer)",
    "lease_layers_layer": "lease_layers(layer)",
    "layer_blobs_digest": "layer_blobs(digest)",
}


def _schema() -> str:
    """The whole schema as one transaction, so a reader sees none of it or all of it."""
    tables = [f"CREATE TABLE IF NOT EXISTS {n} ({c});" for n, c in _TABLES.items()]
    indexes = [f"CREATE INDEX IF NOT EXISTS {n} ON {on};" for n, on in _INDEXES.items()]
    return "\n".join(
        ["BEGIN;", *tables, *indexes, f"PRAGMA user_version={SCHEMA_VERSION};", "COMMIT;"]
    )


class NewerSchemaError(LlbkitError):
    """The database was written by a newer llbkit; the state root names the fix."""

    def __init__(self, found: int) -> None:
        super().__init__(f"schema {found}, this llbkit knows {SCHEMA_VERSION}")
        self.found = found


class LayerRow(NamedTuple):
    """A layer's record, without the disk it uses (measured by the caller)."""

    id: int
    parent: int | None
    created: float
    last_used: float
    usage_count: int
    record_type: str
    description: str
    mutable: bool
    #: imported from a remote cache, not fetched: no directory yet
    lazy: bool = False


def _chain_text(chain: Sequence[int]) -> str:
    return json.dumps(list(chain))


#: connections left open until the process ends (:meth:`StateDB.close`)
_LEFT_OPEN: list[sqlite3.Connection] = []


class StateDB:
    """The connection to ``state.db``; safe to use from threads (one lock serializes it)."""

    def __init__(self, conn: sqlite3.Connection, *, readonly: bool) -> None:
        #: The raw connection, for tests that inspect the file; code uses the methods.
        self.conn = conn
        self.readonly = readonly
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path: Path) -> StateDB:
        """Open ``path`` read-write, creating or upgrading its schema.

        :raises NewerSchemaError: a newer llbkit wrote it; it is left as it is.
        """
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise NewerSchemaError(found)
            conn.executescript(_schema())  # cheap when nothing is missing
        except BaseException:
            conn.close()
            raise
        return cls(conn, readonly=False)

    @classmethod
    def open_readonly(cls, path: Path) -> StateDB:
        """Open ``path`` for reading only, never writing to it; a missing file reads as empty.

        :raises NewerSchemaError: a newer llbkit wrote it.
        """
        if path.exists():
            uri = path.absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise NewerSchemaError(found)
            present = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            for name, columns in _TABLES.items():
                if name not in present:  # an older (or not yet created) root: reads as empty
                    conn.execute(f"CREATE TEMP TABLE {name} ({columns})")
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return cls(conn, readonly=True)

    def close(self, *, checkpoint: bool = True) -> None:
        """Close the connection. ``checkpoint=False``, for a process about to end: the
        connection is left to the exit, which spares closing's copy of the write-ahead log
        into the database and its fsync (8 ms of every build); the next opener reads that log,
        as after a crash, and nothing committed is lost."""
        with self.lock:
            if checkpoint or self.readonly:
                self.conn.close()
            else:
                _LEFT_OPEN.append(self.conn)  # freed, it would close (and checkpoint) after all

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change; what runs inside (a rename...) undoes it by raising.

        Nested blocks belong to the outermost one, and other threads wait for it to end.
        """
        with self.lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[object] = ()) -> tuple[Any, ...] | None:
        with self.lock:
            row: tuple[Any, ...] | None = self.conn.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def _run(self, sql: str, args: Sequence[object] = ()) -> None:
        with self.lock:
            self.conn.execute(sql, args)

    # -- settings -------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE name=?", (name,))
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        self._run("INSERT OR REPLACE INTO settings(name, value) VALUES (?, ?)", (name, value))

    def last_gc(self) -> float | None:
        """When GC last ran (seconds since the epoch), or ``None`` if never."""
        value = self.setting("last_gc")
        return None if value is None else float(value)

    def set_last_gc(self, when: float) -> None:
        self.set_setting("last_gc", str(when))

    # -- layers ---------------------------------------------------------------------------

    def insert_layer(
        self,
        *,
        parent: int | None,
        size: int,
        record_type: str,
        description: str,
        mutable: bool,
        whiteouts: bool,
    ) -> int:
        """A new layer's row, counted as used once; returns its id."""
        now = time.time()
        with self.lock:
            cur = self.conn.execute(
                "INSERT INTO layers(parent, size, created, last_used, usage_count, record_type,"
                " description, mutable, whiteouts) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (parent, size, now, now, record_type, description, int(mutable), int(whiteouts)),
            )
            return int(cur.lastrowid or 0)

    def forget_layer(self, layer: int) -> None:
        """Delete a layer's row, every result that needs it, every flattening of it and its
        blobs' records."""
        with self.transaction():
            self._run(
                "DELETE FROM results WHERE key IN (SELECT result FROM result_layers WHERE layer=?)",
                (layer,),
            )
            self._run(
                "DELETE FROM flats WHERE layer=?1"
                " OR EXISTS (SELECT 1 FROM json_each(flats.chain) WHERE value=?1)",
                (layer,),
            )
            self._run("DELETE FROM layer_blobs WHERE layer=?", (layer,))
            self._run("DELETE FROM lazy_layers WHERE layer=?", (layer,))
            self._run("DELETE FROM layer_pools WHERE layer=?", (layer,))
            self._run("UPDATE layers SET parent=NULL WHERE parent=?", (layer,))
            self._run("DELETE FROM layers WHERE id=?", (layer,))

    def layer_ids(self) -> set[int]:
        return {int(r[0]) for r in self._all("SELECT id FROM layers")}

    def layer_rows(self) -> list[LayerRow]:
        """Every layer's record, oldest first, read at one instant."""
        rows = self._all(
            "SELECT id, parent, created, last_used, usage_count, record_type, description,"
            " mutable, z.layer IS NOT NULL FROM layers"
            " LEFT JOIN lazy_layers z ON z.layer = layers.id ORDER BY id"
        )
        return [
            LayerRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), bool(r[8])) for r in rows
        ]

    # -- lazy layers ----------------------------------------------------------------------

    def insert_lazy_layer(
        self,
        *,
        parent: int | None,
        size: int,
        description: str,
        digest: str,
        diff_id: str,
        media_type: str,
        variant: str,
        origin: str,
        created: float,
    ) -> int:
        """A layer known by its blob only (imported, not fetched), counted as used once, as
        a build records it; returns its id."""
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO layers(parent, size, created, last_used, usage_count, record_type,"
                " description) VALUES (?, ?, ?, ?, 1, 'regular', ?)",
                (parent, size, created, time.time(), description),
            )
            layer = int(cur.lastrowid or 0)
            self._run(
                "INSERT INTO lazy_layers(layer, digest, media_type, origin) VALUES (?, ?, ?, ?)",
                (layer, digest, media_type, origin),
            )
            self._run(
                "INSERT OR REPLACE INTO layer_blobs(layer, variant, digest, diff_id, size)"
                " VALUES (?, ?, ?, ?, ?)",
                (layer, variant, digest, diff_id, size),
            )
        return layer

    def layer_with_blob(self, digest: str, parent: int | None) -> int | None:
        """A layer (fetched or not) whose blob is ``digest`` on top of ``parent``."""
        row = self._one(
            "SELECT b.layer FROM layer_blobs b JOIN layers l ON l.id = b.layer"
            " WHERE b.digest=? AND l.parent IS ? ORDER BY b.layer LIMIT 1",
            (digest, parent),
        )
        return None if row is None else int(row[0])

    def lazy_layers(self, layers: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Which of ``layers`` are not fetched: each one's blob digest and media type."""
        if not layers:
            return {}
        marks = ",".join("?" * len(layers))
        rows = self._all(
            f"SELECT layer, digest, media_type FROM lazy_layers WHERE layer IN ({marks})",
            tuple(layers),
        )
        return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}

    def layer_descriptions(self, layers: Sequence[int]) -> dict[int, str]:
        """What made each of ``layers`` (an image exporter's history names bare layers so)."""
        if not layers:
            return {}
        marks = ",".join("?" * len(layers))
        rows = self._all(f"SELECT id, description FROM layers WHERE id IN ({marks})", tuple(layers))
        return {int(r[0]): str(r[1]) for r in rows}

    def layers_created(self, layers: Sequence[int]) -> dict[int, float]:
        """When each of ``layers`` was made (for a layer imported, when it was first made)."""
        if not layers:
            return {}
        marks = ",".join("?" * len(layers))
        rows = self._all(f"SELECT id, created FROM layers WHERE id IN ({marks})", tuple(layers))
        return {int(r[0]): float(r[1]) for r in rows}

    def lazy_origin(self, digest: str) -> str | None:
        """The cache a lazy layer with blob ``digest`` was imported from."""
        row = self._one("SELECT origin FROM lazy_layers WHERE digest=? LIMIT 1", (digest,))
        return None if row is None else str(row[0])

    # -- the layers' disk, each inode once ----------------------------------------------------

    def accounted_layers(self) -> set[int]:
        return {int(r[0]) for r in self._all("SELECT layer FROM layer_inodes")}

    def account_layer(self, layer: int, inodes: Mapping[int, int]) -> None:
        """Count the measured ``layer`` in: its inodes and each one's bytes."""
        packed = array("Q", sorted(inodes)).tobytes()
        with self.transaction():
            self._run("INSERT INTO layer_inodes(layer, inodes) VALUES(?, ?)", (layer, packed))
            self.conn.executemany(
                "INSERT INTO inode_bytes(ino, bytes, refs) VALUES(?, ?, 1)"
                " ON CONFLICT(ino) DO UPDATE SET refs = refs + 1",
                inodes.items(),
            )

    def unaccount_layer(self, layer: int) -> None:
        """Count a layer that is gone out again."""
        with self.transaction():
            row = self._one("SELECT inodes FROM layer_inodes WHERE layer=?", (layer,))
            if row is None:
                return
            inodes = array("Q")
            inodes.frombytes(row[0])
            self.conn.executemany(
                "UPDATE inode_bytes SET refs = refs - 1 WHERE ino=?", ((i,) for i in inodes)
            )
            self.conn.executemany(
                "DELETE FROM inode_bytes WHERE ino=? AND refs <= 0", ((i,) for i in inodes)
            )
            self._run("DELETE FROM layer_inodes WHERE layer=?", (layer,))

    def counted_inodes(self) -> tuple[dict[int, bytes], dict[int, int]]:
        """Each counted layer's packed inode numbers, and each counted inode's bytes."""
        with self.lock:  # one instant for both
            lists = {int(r[0]): r[1] for r in self._all("SELECT layer, inodes FROM layer_inodes")}
            sizes = dict(self._all("SELECT ino, bytes FROM inode_bytes")) if lists else {}
        return lists, sizes

    def accounted_bytes(self) -> int:
        row = self._one("SELECT COALESCE(SUM(bytes), 0) FROM inode_bytes")
        return 0 if row is None else int(row[0])

    def lazy_layer_ids(self) -> set[int]:
        return {int(r[0]) for r in self._all("SELECT layer FROM lazy_layers")}

    def fetched_layer(self, layer: int, size: int, whiteouts: bool) -> None:
        """A lazy layer's directory is in place now."""
        with self.transaction():
            self._run("DELETE FROM lazy_layers WHERE layer=?", (layer,))
            self._run(
                "UPDATE layers SET size=?, whiteouts=? WHERE id=?", (size, int(whiteouts), layer)
            )

    def result_aliases(self, result: str) -> list[str]:
        """Every key that finds ``result`` (the result's own key among them)."""
        rows = self._all("SELECT key FROM keys WHERE result=? ORDER BY key", (result,))
        return [str(r[0]) for r in rows]

    def result_chain(self, result: str) -> tuple[int, ...] | None:
        row = self._one("SELECT chain FROM results WHERE key=?", (result,))
        return None if row is None else tuple(json.loads(row[0]))

    def touch_layers(self, layers: Sequence[int]) -> None:
        """Count a use of each layer, now (for GC's "least recently used")."""
        if not layers:
            return
        marks = ",".join("?" * len(layers))
        self._run(
            f"UPDATE layers SET last_used=?, usage_count=usage_count+1 WHERE id IN ({marks})",
            (time.time(), *layers),
        )

    def has_whiteouts(self, layer: int) -> bool:
        row = self._one("SELECT whiteouts FROM layers WHERE id=?", (layer,))
        return bool(row and row[0])

    def parents_and_whiteouts(self, layers: Sequence[int]) -> dict[int, tuple[int | None, bool]]:
        """Each layer's parent and whether it holds whiteouts."""
        marks = ",".join("?" * len(layers))
        rows = self._all(f"SELECT id, parent, whiteouts FROM layers WHERE id IN ({marks})", layers)
        return {int(r[0]): (None if r[1] is None else int(r[1]), bool(r[2])) for r in rows}

    # -- results and keys -----------------------------------------------------------------

    def save_result(self, key: str, chain: Sequence[int]) -> None:
        """Name ``chain`` by ``key``, replacing what the key named before."""
        with self.transaction():
            self._run("DELETE FROM results WHERE key=?", (key,))
            self._run(
                "INSERT INTO results(key, chain, created) VALUES (?, ?, ?)",
                (key, _chain_text(chain), time.time()),
            )
            self.conn.executemany(
                "INSERT INTO result_layers(result, layer) VALUES (?, ?)",
                [(key, layer) for layer in set(chain)],
            )

    def link_key(self, key: str, result: str, vertex_name: str, explanation: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO keys(key, result, vertex_name, explanation, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, result, vertex_name, explanation, time.time()),
        )

    def lookup(self, key: str) -> tuple[str, tuple[int, ...]] | None:
        """The result ``key`` finds: its own key and its chain."""
        row = self._one(
            "SELECT r.key, r.chain FROM keys k JOIN results r ON r.key = k.result WHERE k.key=?",
            (key,),
        )
        return None if row is None else (str(row[0]), tuple(json.loads(row[1])))

    # -- flattened chains and file digests ------------------------------------------------

    def layer_pools(self, layers: Sequence[int]) -> dict[int, dict[str, bytes | None]]:
        """The inode pools each of ``layers`` shares (only layers that share any)."""
        marks = ",".join("?" * len(layers))
        rows = self._all(
            f"SELECT layer, pool, inodes FROM layer_pools WHERE layer IN ({marks})", layers
        )
        found: dict[int, dict[str, bytes | None]] = {}
        for layer, pool, inodes in rows:
            found.setdefault(int(layer), {})[str(pool)] = inodes
        return found

    def add_layer_pools(self, layer: int, pools: dict[str, bytes | None]) -> None:
        with self.transaction():
            for pool, inodes in pools.items():
                self._run(
                    "INSERT OR REPLACE INTO layer_pools(layer, pool, inodes) VALUES (?, ?, ?)",
                    (layer, pool, inodes),
                )

    def flat(self, chain: Sequence[int]) -> int | None:
        """The layer holding ``chain`` flattened, if one was made."""
        row = self._one("SELECT layer FROM flats WHERE chain=?", (_chain_text(chain),))
        return None if row is None else int(row[0])

    def save_flat(self, chain: Sequence[int], layer: int) -> None:
        self._run(
            "INSERT OR REPLACE INTO flats(chain, layer) VALUES (?, ?)", (_chain_text(chain), layer)
        )

    def file_hash(self, key: tuple[int, int, int, int]) -> str | None:
        """A file's digest by (dev, ino, mtime, size)."""
        row = self._one(
            "SELECT digest FROM file_hashes WHERE dev=? AND ino=? AND mtime=? AND size=?", key
        )
        return None if row is None else str(row[0])

    def save_file_hash(self, key: tuple[int, int, int, int], digest: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO file_hashes(dev, ino, mtime, size, digest)"
            " VALUES (?, ?, ?, ?, ?)",
            (*key, digest),
        )

    def forget_file_hash(self, key: tuple[int, int, int, int]) -> None:
        self._run("DELETE FROM file_hashes WHERE dev=? AND ino=? AND mtime=? AND size=?", key)

    # -- blobs ----------------------------------------------------------------------------

    def record_blob(self, digest: str, size: int, media_type: str) -> None:
        """Record a blob now on disk (a blob recorded before counts as used)."""
        now = time.time()
        self._run(
            "INSERT INTO blobs(digest, size, media_type, created, last_used) VALUES (?,?,?,?,?) "
            "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
            (digest, size, media_type, now, now),
        )

    def forget_blob(self, digest: str) -> None:
        with self.transaction():
            self._run("DELETE FROM blobs WHERE digest=?", (digest,))
            self._run("DELETE FROM blob_sources WHERE digest=?", (digest,))

    def layer_blob_digests(self, layer: int) -> set[str]:
        """The blobs ``layer`` has (every compression of it)."""
        rows = self._all("SELECT digest FROM layer_blobs WHERE layer=?", (layer,))
        return {str(r[0]) for r in rows}

    def unnamed_blobs(self, digests: Iterable[str] | None = None) -> list[str]:
        """Of ``digests`` (of every recorded blob, when None), those no layer has."""
        if digests is None:
            rows = self._all(
                "SELECT digest FROM blobs WHERE digest NOT IN (SELECT digest FROM layer_blobs)"
            )
            return [str(r[0]) for r in rows]
        return [
            d
            for d in digests
            if self._one("SELECT 1 FROM layer_blobs WHERE digest=? LIMIT 1", (d,)) is None
        ]

    def layer_blob_sizes(self) -> dict[int, list[tuple[str, int]]]:
        """Each layer's blobs that are on disk, with their sizes."""
        found: dict[int, list[tuple[str, int]]] = {}
        rows = self._all(
            "SELECT DISTINCT l.layer, b.digest, b.size FROM layer_blobs l"
            " JOIN blobs b ON b.digest = l.digest ORDER BY l.layer"
        )
        for layer, digest, size in rows:
            found.setdefault(int(layer), []).append((str(digest), int(size)))
        return found

    def named_blobs_size(self) -> int:
        """Bytes of the blobs on disk that a layer has, each once."""
        row = self._one(
            "SELECT COALESCE(SUM(size), 0) FROM blobs"
            " WHERE digest IN (SELECT digest FROM layer_blobs)"
        )
        return int(row[0]) if row else 0

    def touch_blob(self, digest: str) -> None:
        self._run("UPDATE blobs SET last_used=? WHERE digest=?", (time.time(), digest))

    def blob_digests(self) -> list[str]:
        return [str(r[0]) for r in self._all("SELECT digest FROM blobs")]

    def blobs_size(self) -> int:
        """Bytes of every recorded blob."""
        row = self._one("SELECT COALESCE(SUM(size), 0) FROM blobs")
        return int(row[0]) if row else 0

    def layer_with(self, parent: int | None, diff_id: str) -> int | None:
        """A fetched, immutable layer on ``parent`` (None: at the bottom) whose own tar is
        ``diff_id``: a blob made of its tree as it is (no timestamp rewritten) says so."""
        row = self._one(
            "SELECT l.id FROM layers l JOIN layer_blobs b ON b.layer = l.id"
            " WHERE l.parent IS ? AND b.diff_id = ? AND b.variant LIKE '%:None'"
            " AND l.mutable = 0 AND l.id NOT IN (SELECT layer FROM lazy_layers)"
            " ORDER BY l.id LIMIT 1",
            (parent, diff_id),
        )
        return None if row is None else int(row[0])

    def layer_blob(self, layer: int, variant: str) -> tuple[str, str, int] | None:
        """The blob made of ``layer`` for ``variant``: its digest, diff id and size."""
        row = self._one(
            "SELECT digest, diff_id, size FROM layer_blobs WHERE layer=? AND variant=?",
            (layer, variant),
        )
        return None if row is None else (str(row[0]), str(row[1]), int(row[2]))

    def save_layer_blob(
        self,
        layer: int,
        variant: str,
        digest: str,
        diff_id: str,
        size: int,
        *,
        source: tuple[str, str] | None = None,
    ) -> None:
        """Remember a layer's blob, and the registry repository it came from if pulled."""
        with self.transaction():
            self._run(
                "INSERT OR REPLACE INTO layer_blobs(layer, variant, digest, diff_id, size)"
                " VALUES (?, ?, ?, ?, ?)",
                (layer, variant, digest, diff_id, size),
            )
            if source is not None:
                self._run(
                    "INSERT OR IGNORE INTO blob_sources(digest, host, repo) VALUES (?, ?, ?)",
                    (digest, *source),
                )

    def blob_variants(self, layers: Sequence[int]) -> dict[int, list[str]]:
        """The compressions each of ``layers`` has a blob in (plain ones, not rewritten),
        the first made first: a layer's own blob (pulled, imported or first exported) before
        those converted from it."""
        if not layers:
            return {}
        marks = ",".join("?" * len(layers))
        rows = self._all(
            f"SELECT layer, variant FROM layer_blobs WHERE layer IN ({marks}) ORDER BY rowid",
            tuple(layers),
        )
        found: dict[int, list[str]] = {layer: [] for layer in layers}
        for layer, variant in rows:
            compression, level, epoch = str(variant).split(":")
            if level == "None" and epoch == "None":
                found[int(layer)].append(compression)
        return found

    def add_blob_source(self, digest: str, host: str, repo: str) -> None:
        """Remember a registry repository that has the blob (a push there can mount it)."""
        self._run(
            "INSERT OR IGNORE INTO blob_sources(digest, host, repo) VALUES (?, ?, ?)",
            (digest, host, repo),
        )

    def blob_sources(self, digest: str) -> list[tuple[str, str]]:
        rows = self._all("SELECT host, repo FROM blob_sources WHERE digest=?", (digest,))
        return [(str(r[0]), str(r[1])) for r in rows]

    # -- leases ---------------------------------------------------------------------------

    def add_lease_layers(self, lease: str, layers: Iterable[int]) -> None:
        """Mark ``layers`` as held by ``lease`` (readers in other processes see them in use)."""
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO lease_layers(lease, layer) VALUES (?, ?)",
                [(lease, layer) for layer in layers],
            )

    def drop_lease(self, lease: str) -> None:
        self._run("DELETE FROM lease_layers WHERE lease=?", (lease,))

    def leased_layers(self) -> set[int]:
        """Layers some lease holds."""
        return {int(r[0]) for r in self._all("SELECT DISTINCT layer FROM lease_layers")}

    def clear_leases(self) -> None:
        """Drop every lease: the owner calls this at open, when no lease can be alive."""
        self._run("DELETE FROM lease_layers")
