"""The state database: the only module with SQL, its upgrades, transactions and leases."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

import llbkit.core
from llbkit.core.cache.db import SCHEMA_VERSION, StateDB
from llbkit.core.cache.root import StateRoot, StateRootError
from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import disk_usage
from llbkit.core.config import EngineConfig, GCRule
from llbkit.core.control import Controller
from llbkit.core.plugins.registry import PluginRegistry

_SQL_CALL = re.compile(r"\.(execute|executemany|executescript)\(|sqlite3\.connect\(")


def test_no_module_but_db_speaks_sql() -> None:
    src = Path(llbkit.core.__file__).parent
    offenders = [
        f"{path.relative_to(src)}:{n}"
        for path in sorted(src.rglob("*.py"))
        if path.name != "db.py" or path.parent.name != "cache"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _SQL_CALL.search(line)
    ]
    assert offenders == []


def _commit(store: Store, name: str) -> int:
    tree = store.stage()
    (tree / name).write_text(name)
    return store.commit_layer(tree, description=name)


def _make_version_2(path: Path) -> None:
    """What llbkit wrote before leases: no lease_layers (nor lazy_layers) table, version 2."""
    db = sqlite3.connect(path / "state.db")
    db.execute("DROP TABLE lease_layers")
    db.execute("DROP TABLE lazy_layers")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()


def test_an_older_root_is_upgraded_in_place(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root, layer_format="oci") as store:
        layer = _commit(store, "kept")
        store.save_result("key", (layer,))
        store.link_key("key", "key", "v", "{}")
    _make_version_2(root)
    with Store.open(root) as store:
        assert store.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert store.lookup("key") == ("key", (layer,))
        store.db.add_lease_layers("l", [layer])
        assert store.db.leased_layers() == {layer}
        assert store.lazy((layer,)) == {}  # the imported-layers table is there, empty


def test_a_reader_of_an_older_root_sees_no_leases_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root, layer_format="oci") as store:
        _commit(store, "kept")
    _make_version_2(root)
    with Store.open_readonly(root) as view:
        assert [(r.description, r.in_use) for r in disk_usage(view)] == [("kept", False)]
    db = sqlite3.connect(root / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name='lease_layers'").fetchall()
    db.close()


def test_a_reader_refuses_a_root_from_a_newer_llbkit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with StateRoot.open(root):
        pass
    db = sqlite3.connect(root / "state.db")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateRootError, match=r"written by a newer llbkit \(schema 99, this"):
        StateRoot.open_readonly(root)


def test_a_failed_rename_leaves_no_row(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        with pytest.raises(FileNotFoundError):
            store.commit_layer(tmp_path / "missing", description="never")
        assert store.db.layer_ids() == set()


def test_nested_transactions_commit_or_roll_back_as_one(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        db = store.db
        with pytest.raises(RuntimeError), db.transaction():
            db.set_last_gc(1.0)
            with db.transaction():
                db.add_lease_layers("l", [1, 2])
            raise RuntimeError
        assert (db.last_gc(), db.leased_layers()) == (None, set())
        with db.transaction():
            db.set_last_gc(2.0)
            db.add_lease_layers("l", [1])
        assert (db.last_gc(), db.leased_layers()) == (2.0, {1})


def test_leases_are_added_dropped_and_cleared(tmp_path: Path) -> None:
    with StateRoot.open(tmp_path / "root") as root:
        db = root.db
        db.add_lease_layers("a", [1, 2])
        db.add_lease_layers("b", [2, 3])
        assert db.leased_layers() == {1, 2, 3}
        db.drop_lease("a")
        assert db.leased_layers() == {2, 3}
        db.clear_leases()
        assert db.leased_layers() == set()


def test_leased_layers_are_in_use_for_the_owner_too(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        layer = _commit(store, "leased")
        store.db.add_lease_layers("build", [layer])
        assert [r.in_use for r in disk_usage(store)] == [True]


def test_forgetting_a_layer_forgets_what_needs_it(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root", layer_format="oci") as store:
        low, high = _commit(store, "low"), _commit(store, "high")
        store.save_result("both", (low, high))
        store.link_key("k", "both", "v", "{}")
        store.save_result("high", (high,))
        store.db.save_flat((low, high), high)
        store.db.save_flat((high,), low)
        store.db.save_layer_blob(low, "gzip", "sha256:" + "1" * 64, "sha256:" + "2" * 64, 3)
        store.delete_layer(low)
        assert store.lookup("k") is None and store.db.flat((low, high)) is None
        assert store.db.flat((high,)) is None
        assert store.db.conn.execute("SELECT key FROM results").fetchall() == [("high",)]
        assert store.db.layer_blob(low, "gzip") is None


def test_gc_runs_at_most_once_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llbkit.core.control.controller as controller_module

    runs: list[float] = []
    monkeypatch.setattr(
        controller_module, "apply_gc", lambda store, rules: runs.append(time.time()) or []
    )
    config = EngineConfig(gc_rules=[GCRule(keep_bytes=1)])
    with Controller(Store.open(tmp_path / "root"), config, PluginRegistry.from_env()) as engine:
        engine.maybe_gc()
        engine.maybe_gc()
        assert len(runs) == 1
        last = engine.store.db.last_gc()
        assert last is not None and last >= runs[0]
        engine.store.db.set_last_gc(time.time() - 61)
        engine.maybe_gc()
        assert len(runs) == 2


def test_a_missing_database_reads_as_empty(tmp_path: Path) -> None:
    db = StateDB.open_readonly(tmp_path / "state.db")
    try:
        assert (db.layer_rows(), db.leased_layers(), db.last_gc()) == ([], set(), None)
    finally:
        db.close()
    assert list(tmp_path.iterdir()) == []


_WRITE_THEN_EXIT = """
import os, sys
from pathlib import Path
from llbkit.core.cache.db import StateDB
db = StateDB.open(Path(sys.argv[1]))
db.set_setting("written", "before the exit")
db.close(checkpoint=sys.argv[2] == "checkpoint")
os._exit(0)  # as the llbkit command leaves: no teardown that could close it after all
"""


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_process_that_ends_without_the_checkpoint_loses_nothing(
    tmp_path: Path, checkpoint: bool
) -> None:
    import subprocess
    import sys

    path = tmp_path / "state.db"
    argv = [sys.executable, "-c", _WRITE_THEN_EXIT, str(path)]
    subprocess.run([*argv, "checkpoint" if checkpoint else "leave"], check=True)
    wal = tmp_path / "state.db-wal"
    # Closing copies the log into the database and removes it; leaving it to the exit does not.
    assert wal.exists() is not checkpoint
    if not checkpoint:
        assert wal.stat().st_size > 0
        reader = StateDB.open_readonly(path)  # du beside: reads through the log
        try:
            assert reader.setting("written") == "before the exit"
        finally:
            reader.close()
    db = StateDB.open(path)  # the next owner
    try:
        assert db.setting("written") == "before the exit"
    finally:
        db.close()
    assert not wal.exists()
