"""du's records, filters, prune's order and the GC config, on a real store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.cache.usage import UsageRecord, disk_usage, parse_filters, prune
from llbkit.core.config import load_config, parse_bytes, parse_duration
from llbkit.core.errors import ConfigError
from llbkit.core.snapshot.layers import disk_blocks
from llbkit.sdk import llb

from .helpers import build, open_engine


def record(**fields: object) -> UsageRecord:
    base: dict[str, object] = dict(
        id="1",
        parents=(),
        size=1,
        created=0.0,
        last_used=0.0,
        usage_count=1,
        description="d",
        record_type="regular",
        mutable=False,
        in_use=False,
    )
    base.update(fields)
    return UsageRecord(**base)  # type: ignore[arg-type]


def test_filters_follow_containerd_syntax() -> None:
    local = record(record_type="source.local", description="local://ctx")
    regular = record(description="mkfile /x", in_use=True)
    either = parse_filters(["type==source.local,type==exec.cachemount"])
    assert either(local) and not either(regular)
    assert parse_filters(["description~=^mkfile"])(regular)
    assert parse_filters(["inuse"])(regular) and not parse_filters(["inuse"])(local)
    assert parse_filters(["type!=regular"])(local)
    assert parse_filters(["type==regular", "type==source.local"])(local)  # alternatives
    with pytest.raises(ConfigError, match="invalid filter"):
        parse_filters(["size>3"])


def test_sizes_and_durations() -> None:
    assert parse_bytes("512MB", "k") == 512 * 10**6
    assert parse_bytes(1024, "k") == 1024
    assert parse_bytes("2GiB", "k") == 2 * 2**30
    assert parse_duration("1h30m", "k") == 5400
    assert parse_duration(3600, "k") == 3600
    with pytest.raises(ConfigError, match="keepDuration"):
        parse_duration("soon", "keepDuration")


def test_config_reads_buildkit_keys(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text(
        'root = "/tmp/x"\n[grpc]\naddress = ["unix:///run/x.sock"]\ngid = 5\n'
        '[grpc.tls]\ncert = "c.pem"\nkey = "k.pem"\nca = "ca.pem"\n'
        '[otel]\nsocketPath = "/run/otel.sock"\n'
        "[worker.oci]\nmax-parallelism = 3\ngckeepstorage = 9000\n"
        '[[worker.oci.gcpolicy]]\nkeepDuration = "48h"\nkeepBytes = "1GB"\n'
        'filters = ["type==source.local"]\n'
    )
    config = load_config(path)
    assert config.max_parallelism == 3 and config.gc_keep_storage == 9000
    assert config.gc_rules[0].keep_duration == 48 * 3600
    assert config.gc_rules[0].keep_bytes == 10**9
    assert config.unused == ["otel.socketPath"]  # llbkitd reads [grpc]
    assert config.grpc.address == ["unix:///run/x.sock"] and config.grpc.gid == 5
    assert (config.grpc.tls_cert, config.grpc.tls_key, config.grpc.tls_ca) == (
        "c.pem",
        "k.pem",
        "ca.pem",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grpc]\naddress = 5\n", "grpc.address must be a list"),
        ("[grpc]\nuid = -1\n", "grpc.uid must be a number"),
        ("[grpc]\nbogus = 1\n", "unknown key grpc.bogus"),
        ("[grpc.tls]\ncert = 1\n", "grpc.tls.cert must be a file name"),
        ("debug = 'yes'\n", "debug must be true or false"),
    ],
)
def test_bad_grpc_keys_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker.oci]\ngc = 'maybe'\n", "worker.oci.gc must be true or false"),
        ("[worker.oci]\ngc = 1\n", "worker.oci.gc must be true or false"),
        ("[worker.oci]\ngckeepstorage = 'lots'\n", "worker.oci.gckeepstorage: 'lots' is not a"),
        ("[llbkit]\nroot = 5\n", "llbkit.root must be a directory's path"),
        ("[llbkit]\nroot = ''\n", "llbkit.root must be a directory's path"),
        (
            "[worker.oci]\nnoProcessSandbox = true\n",
            "worker.oci.noProcessSandbox: can't enable NoProcessSandbox without Rootless",
        ),
    ],
)
def test_a_bad_gc_or_root_key_names_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each in one line that starts with the file, as BuildKit's TOML reader refuses it."""
    path = tmp_path / "buildkitd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert message in str(refused.value)


def _age(engine, description: str, seconds_ago: float) -> None:  # type: ignore[no-untyped-def]
    engine.store.db.conn.execute(
        "UPDATE layers SET last_used=? WHERE description=?",
        (time.time() - seconds_ago, description),
    )


def test_prune_keeps_recent_records_and_goes_oldest_first(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        for name in ("old", "mid", "new"):
            build(engine, llb.scratch().file(llb.mkfile(f"/{name}", 0o644, b"x" * 5000)))
        _age(engine, "mkfile /old", 3600 * 5)
        _age(engine, "mkfile /mid", 3600 * 3)
        removed = prune(engine.store, keep_duration=3600 * 4)
        assert [r.description for r in removed] == ["mkfile /old"]
        one = max(r.size for r in disk_usage(engine.store))
        removed = prune(engine.store, keep_bytes=one)
        assert [r.description for r in removed] == ["mkfile /mid"]
        assert [r.description for r in disk_usage(engine.store)] == ["mkfile /new"]


@pytest.mark.root  # parents are recorded for overlay layers
def test_prune_frees_parents_after_children(tmp_path: Path) -> None:
    with open_engine(tmp_path / "root") as engine:
        base = llb.scratch().file(llb.mkfile("/a", 0o644, b"a"))
        build(engine, base.file(llb.mkfile("/b", 0o644, b"b")))
        records = disk_usage(engine.store)
        child = next(r for r in records if r.description == "mkfile /b")
        parent = next(r for r in records if r.description == "mkfile /a")
        assert child.parents == (parent.id,)
        removed = prune(engine.store)
        assert [r.description for r in removed] == ["mkfile /b", "mkfile /a"]
        assert disk_usage(engine.store) == []


def test_sandbox_keys_take_effect(tmp_path: Path) -> None:
    """``defaultCgroupParent`` is the OCI worker's, not reported as without effect;
    ``noProcessSandbox = false`` is what it is without the key."""
    path = tmp_path / "buildkitd.toml"
    path.write_text('[worker.oci]\ndefaultCgroupParent = "ci"\nnoProcessSandbox = false\n')
    assert load_config(path).unused == []


def test_gcpolicy_space_keys_are_reported_without_effect(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text(
        '[[worker.oci.gcpolicy]]\nkeepBytes = "1GB"\nreservedSpace = "1GB"\n'
        '[[worker.oci.gcpolicy]]\nmaxUsedSpace = "2GB"\nminFreeSpace = "3GB"\n'
        "reservedSpace = 1\n"
    )
    config = load_config(path)
    assert config.gc_rules[0].keep_bytes == 10**9
    assert config.unused == [
        "worker.oci.gcpolicy.maxUsedSpace",
        "worker.oci.gcpolicy.minFreeSpace",
        "worker.oci.gcpolicy.reservedSpace",
    ]


def test_a_context_mirror_is_measured_again_only_when_a_sync_changed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``du`` and GC walk a local context's mirror once per change, not every time: a
    rebuild that changed nothing keeps the measurement, an edit makes a new one."""
    from llbkit.core.cache import usage

    walked: list[Path] = []
    measure = usage.disk_blocks

    def counting(path: Path, seen: set[tuple[int, int]]) -> int:
        walked.append(path)
        return measure(path, seen)

    monkeypatch.setattr(usage, "disk_blocks", counting)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_bytes(b"a" * 100_000)
    copy = llb.scratch().file(llb.copy(llb.local("ctx"), "/", "/out/"))

    def mirror_size() -> int:
        records = disk_usage(engine.store)
        (found,) = [r for r in records if r.description == "local source mirror"]
        return found.size

    with open_engine(tmp_path / "root") as engine:
        build(engine, copy, locals={"ctx": ctx})
        first = mirror_size()
        assert len(walked) == 1 and first >= 100_000
        assert mirror_size() == first and len(walked) == 1  # du again: not walked
        build(engine, copy, locals={"ctx": ctx})  # nothing changed
        assert mirror_size() == first and len(walked) == 1
        (ctx / "b").write_bytes(b"b" * 200_000)
        build(engine, copy, locals={"ctx": ctx})
        second = mirror_size()
        assert len(walked) == 2 and second >= first + 200_000
        assert second == measure(walked[-1], set())  # the measurement is the disk's


def _counting_layer_walks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from llbkit.core.cache import store as store_module

    walked: list[Path] = []
    measure = store_module.disk_blocks

    def counting(path: Path, seen: set[tuple[int, int]] | None = None, visit: Any = None) -> int:
        walked.append(path)
        return measure(path, seen, visit)

    monkeypatch.setattr(store_module, "disk_blocks", counting)
    return walked


def test_gc_walks_a_layer_once_in_its_life_while_nothing_must_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GC after a build used to walk every layer of the root (a second and more in a large
    one, at the end of a build once a minute); each layer's size is now measured once and
    kept, and the store is walked whole only when a rule's keepBytes may be passed."""
    from llbkit.core.cache.usage import apply_gc
    from llbkit.core.config import GCRule

    walked = _counting_layer_walks(monkeypatch)
    roomy = [GCRule(keep_duration=3600, keep_bytes=10**12), GCRule(keep_bytes=10**12)]
    with open_engine(tmp_path / "root") as engine:
        for name in ("a", "b"):
            build(engine, llb.scratch().file(llb.mkfile(f"/{name}", 0o644, b"x" * 5000)))
        assert apply_gc(engine.store, roomy) == []
        first = sorted(walked)
        assert len(first) == 2  # each layer, once
        assert apply_gc(engine.store, roomy) == []
        assert sorted(walked) == first  # kept: not walked again
        build(engine, llb.scratch().file(llb.mkfile("/c", 0o644, b"x" * 5000)))
        assert apply_gc(engine.store, roomy) == []
        assert len(walked) == 3  # only the new one
        # A rule the counted total passes: each record's own figure decides, as before.
        removed = apply_gc(engine.store, [GCRule(keep_bytes=1)])
        assert sorted(r.description for r in removed) == ["mkfile /a", "mkfile /b", "mkfile /c"]
        assert disk_usage(engine.store) == []


def test_the_counted_total_is_the_walks_total(tmp_path: Path) -> None:
    """What GC reads instead of walking is the sum du's walk finds, every inode once: with
    layers sharing inodes (a context and its copy), after a prune, and after a layer went
    without GC being told (an older llbkit deleted it)."""
    import shutil

    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    for n in range(20):
        (ctx / "sub" / f"f{n}").write_bytes(bytes([n]) * 40_000)
    copy = llb.scratch().file(llb.copy(llb.local("ctx"), "/", "/out/"))

    def walked() -> int:  # every layer's directory, each inode once: what du's walk finds
        seen: set[tuple[int, int]] = set()
        return sum(disk_blocks(engine.store.layer_path(i), seen) for i in layer_ids())

    def layer_ids() -> list[int]:
        return sorted(engine.store.db.layer_ids())

    with open_engine(tmp_path / "root") as engine:
        build(engine, copy, locals={"ctx": ctx})
        (ctx / "sub" / "f0").write_bytes(b"changed" * 10_000)
        build(engine, copy, locals={"ctx": ctx})
        build(engine, llb.scratch().file(llb.mkfile("/x", 0o644, b"x" * 30_000)))
        assert len(disk_usage(engine.store)) >= 5
        total = walked()
        # four layers of 800 kB, their files shared: counted once, not four times
        assert 800_000 < total < 1_500_000
        assert engine.store.accounted_bytes() == total
        # du's records, sized from what GC counted: each as the walk attributes it
        seen: set[tuple[int, int]] = set()
        by_walk = {f"{i:025d}": disk_blocks(engine.store.layer_path(i), seen) for i in layer_ids()}
        assert {r.id: r.size for r in disk_usage(engine.store) if not r.mutable} == by_walk
        removed = prune(engine.store, filters=["description~=mkfile"])
        assert [r.description for r in removed] == ["mkfile /x"]
        assert engine.store.accounted_bytes() == walked() < total
        assert sum(r.size for r in disk_usage(engine.store) if not r.mutable) == walked()
        gone = max(int(r.id) for r in disk_usage(engine.store) if not r.mutable)
        engine.store.db.forget_layer(gone)
        shutil.rmtree(engine.store.layer_path(gone))
        assert engine.store.accounted_bytes() == walked()
        assert sum(r.size for r in disk_usage(engine.store) if not r.mutable) == walked()
        # one layer counted, a newer one not yet: du counts the first, walks the second
        build(engine, copy.file(llb.mkfile("/y", 0o644, b"y" * 20_000)), locals={"ctx": ctx})
        assert engine.store.db.layer_ids() - engine.store.db.accounted_layers()
        seen = set()
        by_walk = {f"{i:025d}": disk_blocks(engine.store.layer_path(i), seen) for i in layer_ids()}
        assert {r.id: r.size for r in disk_usage(engine.store) if not r.mutable} == by_walk
