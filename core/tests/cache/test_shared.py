"""A state root shared between processes: a second owner waits, readers never do."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llbkit.core.cache.root import StateRoot
from llbkit.core.cache.store import Store
from llbkit.core.cache.usage import UsageRecord, disk_usage

#: Holds the root until its stdin closes; with ``lease``, leases its first layer, and drops
#: the lease when it reads a line.
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from llbkit.core.cache.store import Store
    store = Store.open(Path(sys.argv[1]), layer_format="oci")
    layers = []
    for name in ("leased", "free"):
        tree = store.stage()
        (tree / name).write_bytes(b"x" * 10_000)
        layers.append(store.commit_layer(tree, description=name))
    if "lease" in sys.argv:
        store.db.add_lease_layers("build-1", layers[:1])
    print("ready", flush=True)
    if sys.stdin.readline():
        store.db.drop_lease("build-1")
        print("dropped", flush=True)
        sys.stdin.readline()
    """
)

#: Commits layers (and deletes older ones) until the file argv[2] appears.
WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from llbkit.core.cache.store import Store
    store = Store.open(Path(sys.argv[1]), layer_format="oci")
    made = []
    n = 0
    while not os.path.exists(sys.argv[2]):
        tree = store.stage()
        for i in range(20):
            (tree / f"f{i}").write_bytes(b"x" * 5000)
        layer = store.commit_layer(tree, description=f"layer {n}")
        store.save_result(f"key{n}", (layer,))
        made.append(layer)
        if len(made) > 5:
            store.delete_layer(made.pop(0))
        n += 1
        if n == 3:
            print("ready", flush=True)
    print(n, flush=True)
    """
)

#: Opens the root, waiting; with ``async``, from inside an event loop (asyncio's SIGINT
#: handler only cancels the main task).
WAITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import anyio
    from llbkit.core.cache.root import StateRoot
    def open_root():
        return StateRoot.open(Path(sys.argv[1]), wait=lambda line: print(line, flush=True))
    async def in_loop():
        return open_root()
    try:
        root = anyio.run(in_loop) if "async" in sys.argv else open_root()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("opened", sorted(root.db.layer_ids()), flush=True)
    """
)


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process owning ``tmp_path/root`` with two layers, ``leased`` under lease build-1."""
    proc = _start(HOLDER, str(tmp_path / "root"), "lease")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _by_description(records: list[UsageRecord]) -> dict[str, UsageRecord]:
    return {r.description: r for r in records}


def test_a_waiting_open_says_who_holds_the_root_and_opens_once_it_is_free(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    root = tmp_path / "root"
    waiter = _start(WAITER, str(root))
    assert waiter.stdout is not None
    line = waiter.stdout.readline()
    assert line == f"waiting for state root {root} (in use by pid {holder.pid})...\n"
    time.sleep(0.5)
    assert waiter.poll() is None, "it waits while the holder runs"
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    out, _ = waiter.communicate(timeout=10)
    assert (waiter.returncode, out) == (0, "opened [1, 2]\n")


@pytest.mark.parametrize("where", ["plain", "async"])
def test_ctrl_c_interrupts_a_waiting_open_promptly(
    tmp_path: Path, holder: subprocess.Popen[str], where: str
) -> None:
    waiter = _start(WAITER, str(tmp_path / "root"), where)
    assert waiter.stdout is not None
    assert waiter.stdout.readline().startswith("waiting for state root")
    time.sleep(0.5)  # well into the wait
    assert waiter.poll() is None
    started = time.monotonic()
    waiter.send_signal(signal.SIGINT)
    out, _ = waiter.communicate(timeout=10)
    assert time.monotonic() - started < 2
    assert (waiter.returncode, out) == (130, "interrupted\n")
    assert holder.poll() is None


def test_without_wait_a_held_root_still_fails_at_once(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    code = (
        "from pathlib import Path; from llbkit.core.cache.root import StateRoot; "
        f"StateRoot.open(Path({str(tmp_path / 'root')!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert f"is in use by pid {holder.pid}; wait for it to finish" in done.stderr


def test_du_reads_a_root_while_its_owner_writes(tmp_path: Path) -> None:
    root, stop = tmp_path / "root", tmp_path / "stop"
    writer = _start(WRITER, str(root), str(stop))
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        snapshots = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            started = time.monotonic()
            with Store.open_readonly(root) as view:
                records = disk_usage(view)
            assert time.monotonic() - started < 5, "a reader never waits for the owner"
            assert writer.poll() is None, "the owner was writing all along"
            snapshots.append(records)
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    assert writer.returncode == 0, "the reader never got in the owner's way"
    numbers = [[int(r.description.split()[1]) for r in records] for records in snapshots if records]
    assert len(numbers) > 3 and max(numbers[-1]) > max(numbers[0]), "it saw the owner's progress"
    assert all(r.size >= 0 and not r.in_use for records in snapshots for r in records)
    assert any(r.size > 0 for r in snapshots[-1])
    assert int(out) > max(numbers[-1])


def test_leases_of_the_owner_show_as_in_use_in_a_reader(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    root = tmp_path / "root"
    with Store.open_readonly(root) as view:
        seen = _by_description(disk_usage(view))
    assert (seen["leased"].in_use, seen["free"].in_use) == (True, False)
    assert seen["leased"].size >= 10_000
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("drop\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "dropped\n"
    with Store.open_readonly(root) as view:
        assert not any(r.in_use for r in disk_usage(view))


def test_the_owner_clears_leases_of_a_process_that_died(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    root = tmp_path / "root"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with Store.open(root) as store:
        assert store.db.leased_layers() == set()
        assert not any(r.in_use for r in disk_usage(store))
    with Store.open_readonly(root) as view:
        assert _by_description(disk_usage(view))["leased"].in_use is False


def test_a_reader_of_a_root_that_does_not_exist_sees_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    with Store.open_readonly(root) as view:
        assert disk_usage(view) == []
        assert view.root.readonly
    assert not root.exists()


def test_a_reader_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root, layer_format="oci") as store:
        tree = store.stage()
        (tree / "f").write_text("data\n")
        store.commit_layer(tree, description="kept")
    (root / "tmp/left-by-a-crash").mkdir()
    (root / "layers/99").mkdir()  # a directory without a row: an owner's open removes it
    os.unlink(root / "lock")
    with Store.open_readonly(root) as view:
        assert [r.description for r in disk_usage(view)] == ["kept"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            view.db.set_last_gc(1.0)
    assert (root / "tmp/left-by-a-crash").is_dir() and (root / "layers/99").is_dir()
    assert not (root / "lock").exists()


def test_a_layer_deleted_while_a_reader_measures_it_counts_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llbkit.core.cache.store as store_module

    root = tmp_path / "root"
    with Store.open(root, layer_format="oci") as owner:
        for name in ("first", "second"):
            tree = owner.stage()
            (tree / name).write_bytes(b"x" * 10_000)
            owner.commit_layer(tree, description=name)
        measure = store_module.disk_blocks

        def measure_then_delete(
            path: Path, seen: set[tuple[int, int]], visit: Callable[..., None] | None = None
        ) -> int:
            size = measure(path, seen, visit)
            if path.name == "1":  # the owner deletes it just after the reader walked it
                owner.delete_layer(1)
            return size

        monkeypatch.setattr(store_module, "disk_blocks", measure_then_delete)
        with Store.open_readonly(root) as view:
            sizes = {r.description: r.size for r in disk_usage(view)}
        assert sizes["first"] == 0 and sizes["second"] >= 10_000


def test_a_reader_of_a_held_root_does_not_touch_its_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = tmp_path / "root/lock"
    before = lock.read_text()
    with StateRoot.open_readonly(tmp_path / "root") as view:
        assert view.readonly and view.db.layer_ids() == {1, 2}
    assert lock.read_text() == before == f"pid {holder.pid}"
