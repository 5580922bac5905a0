"""``du`` and ``prune``: the store's records with BuildKit's fields, filters and pruning order."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llbkit.core.cache.store import Store
from llbkit.core.config import GCRule
from llbkit.core.errors import ConfigError
from llbkit.core.fs.iterative import rmtree
from llbkit.core.snapshot.layers import disk_blocks

__all__ = ["GENERATION", "UsageRecord", "apply_gc", "disk_usage", "parse_filters", "prune"]

#: A directory record may keep a file of this name whose content its writer changes whenever
#: the directory's content changes (and removes while changing it): the directory is then
#: measured once per generation (kept in its ``measured`` file), not walked by every ``du`` and
#: GC.
GENERATION = "generation"
_MEASURED = "measured"


@dataclass(frozen=True)
class UsageRecord:
    """One record as ``buildctl du`` shows it."""

    id: str
    parents: tuple[str, ...]
    size: int
    created: float
    last_used: float | None
    usage_count: int
    description: str
    record_type: str
    mutable: bool
    in_use: bool
    shared: bool = False

    def field(self, name: str) -> str | bool | None:
        values: dict[str, str | bool] = {
            "id": self.id,
            "parents": ";".join(self.parents),
            "description": self.description,
            "type": self.record_type,
            "inuse": self.in_use,
            "mutable": self.mutable,
            "immutable": not self.mutable,
            "shared": self.shared,
            "private": not self.shared,
        }
        return values.get(name)


_FIELDS = {
    "id",
    "parents",
    "description",
    "type",
    "inuse",
    "mutable",
    "immutable",
    "shared",
    "private",
}
_CLAUSE = re.compile(r"^\s*([a-z]+)\s*(?:(==|!=|~=|=)\s*(.*?))?\s*$")

Predicate = Callable[[UsageRecord], bool]


def parse_filters(filters: Sequence[str]) -> Predicate:
    """containerd filter syntax: ``,`` joins clauses (the same field's ``==`` clauses are
    alternatives), separate filters are alternatives. ``field==v``, ``field!=v``,
    ``field~=regex``, or a bare boolean field."""
    alternatives: list[list[list[Predicate]]] = []
    for text in filters:
        by_field: dict[str, list[Predicate]] = {}
        for clause in (c for c in text.split(",") if c.strip()):
            match = _CLAUSE.match(clause)
            if not match or match.group(1) not in _FIELDS:
                raise ConfigError(
                    f"invalid filter {clause.strip()!r}: use field==value, field!=value or "
                    f"field~=regex with a field of {', '.join(sorted(_FIELDS))}"
                )
            name, op, value = match.group(1), match.group(2), (match.group(3) or "").strip('"')
            by_field.setdefault(f"{name}{op if op == '==' else id(clause)}", []).append(
                _clause(name, op, value)
            )
        alternatives.append(list(by_field.values()))

    def check(record: UsageRecord) -> bool:
        if not alternatives:
            return True
        return any(all(any(p(record) for p in group) for group in alt) for alt in alternatives)

    return check


def _clause(name: str, op: str | None, value: str) -> Predicate:
    if op is None:
        return lambda r: bool(r.field(name))
    if op == "~=":
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ConfigError(f"invalid filter regex {value!r}: {err}") from None
        return lambda r: bool(pattern.search(str(r.field(name))))

    def text(r: UsageRecord) -> str:
        v = r.field(name)
        return str(v).lower() if isinstance(v, bool) else str(v)

    if op in ("==", "="):
        return lambda r: text(r) == value
    return lambda r: text(r) != value


def _directories(store: Store) -> Iterable[tuple[str, Path]]:
    """Mutable records kept as plain directories: cache mounts and local-context mirrors."""
    for kind, base in (
        ("exec.cachemount", store.root.path / "cachemounts"),
        ("source.local", store.root.path / "plugins" / "llbkit.sources" / "local"),
    ):
        try:
            entries = sorted(base.iterdir())
        except FileNotFoundError:  # nothing of that kind yet (or no root at all)
            continue
        yield from ((kind, p) for p in entries if p.is_dir())


def disk_usage(store: Store, *, walk: bool = True) -> list[UsageRecord]:
    """Every layer and local-context mirror, with the disk each really uses (without
    ``walk``, the layers' sizes are 0: :meth:`Store.accounted_bytes` has their sum).

    On a read-only view (:meth:`Store.open_readonly`) the owner may add and delete records
    during the walk: what is deleted while being measured counts 0 or is left out, never an
    error.
    """
    records = []
    for info in store.layers(walk=walk):
        records.append(
            UsageRecord(
                id=f"{info.id:025d}",
                parents=(f"{info.parent:025d}",) if info.parent else (),
                size=info.size,
                created=info.created,
                last_used=info.last_used,
                usage_count=info.usage_count,
                # Imported from a remote cache: only the blob's description is here yet.
                description=(
                    f"{info.description} (not fetched)" if info.lazy else info.description
                ),
                record_type=info.record_type,
                mutable=info.mutable,
                in_use=info.in_use,
            )
        )
    seen: set[tuple[int, int]] = set()
    for kind, path in _directories(store):
        try:
            st = path.stat()
        except FileNotFoundError:  # pruned by the owner since it was listed
            continue
        description = (
            f"cached mount {_label(path)}" if kind == "exec.cachemount" else "local source mirror"
        )
        records.append(
            UsageRecord(
                id=path.name[:25],
                parents=(),
                size=_measured(path, seen, keep=not store.root.readonly),
                created=st.st_ctime,
                last_used=st.st_mtime,
                usage_count=1,
                description=description,
                record_type=kind,
                mutable=True,
                in_use=False,
            )
        )
    return records


def _measured(path: Path, seen: set[tuple[int, int]], *, keep: bool) -> int:
    """The disk a directory record uses, from its last measurement when its
    :data:`GENERATION` has not changed since (a record without one is walked every time)."""
    try:
        generation = (path / GENERATION).read_text()
    except OSError:
        return disk_blocks(path, seen)
    try:
        kept = json.loads((path / _MEASURED).read_text())
        if kept["generation"] == generation:
            return int(kept["size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not keep:
        return disk_blocks(path, seen)
    # The file is there (one block, as its final content) before the walk that counts it.
    record = path / _MEASURED
    try:
        record.write_text(json.dumps({"generation": "", "size": 0}))
        size = disk_blocks(path, seen)
        tmp = path / f".{_MEASURED}"
        tmp.write_text(json.dumps({"generation": generation, "size": size}))
        tmp.replace(record)
    except FileNotFoundError:  # pruned, or the writer is replacing it: measure it later
        return disk_blocks(path, seen)
    return size


def _label(path: Path) -> str:
    """A cache mount's id as its mount gave it (the directory name is a digest of it)."""
    try:
        return path.with_suffix(".id").read_text()
    except FileNotFoundError:  # an older mount without a label, or one being pruned
        return path.name


def prune(
    store: Store,
    *,
    filters: Sequence[str] = (),
    all: bool = False,
    keep_duration: float = 0,
    keep_bytes: int = 0,
) -> list[UsageRecord]:
    """Delete unreferenced records as BuildKit's prune does; return what went. One prune (or
    GC) runs at a time on a store; a second waits for it."""
    match = parse_filters(filters)
    with store.pruning:
        removed, _ = _prune(
            store,
            match,
            disk_usage(store),
            all=all,
            keep_duration=keep_duration,
            keep_bytes=keep_bytes,
        )
        store.drop_unnamed_blobs()
        return removed


def _prune(
    store: Store,
    match: Predicate,
    records: list[UsageRecord],
    *,
    all: bool,
    keep_duration: float,
    keep_bytes: int,
) -> tuple[list[UsageRecord], list[UsageRecord]]:
    """Prune starting from ``records`` (a fresh walk); return what went and what is left."""
    removed: list[UsageRecord] = []
    # One walk of the store, then bookkeeping: a deleted record leaves the list. Sizes count a
    # shared inode once, on its first layer, so after deletions the total is confirmed by a
    # fresh walk before stopping.
    fresh = True
    while True:
        total = sum(r.size for r in records)
        if keep_bytes and total <= keep_bytes:
            if fresh:
                break
            records, fresh = disk_usage(store), True
            continue
        parents = {p for r in records for p in r.parents}
        cutoff = time.time() - keep_duration if keep_duration else None
        candidates = [
            r
            for r in records
            if not r.in_use
            and r.id not in parents
            and match(r)
            and (all or r.record_type not in ("internal", "frontend"))
            and (cutoff is None or (r.last_used or 0) < cutoff)
        ]
        if not candidates:
            break
        if keep_bytes:
            # Oldest first, then least used; one at a time until under the limit.
            candidates.sort(key=lambda r: (r.last_used or 0, r.usage_count))
            candidates = candidates[:1]
        gone = set()
        for record in candidates:
            if _delete(store, record):
                removed.append(record)
            # A record a build took hold of meanwhile stays; it is no candidate any more.
            gone.add(id(record))
        records = [r for r in records if id(r) not in gone]
        fresh = False
    return removed, records


def _delete(store: Store, record: UsageRecord) -> bool:
    if not record.mutable:
        return store.delete_layer(int(record.id))
    for kind, path in _directories(store):
        if kind == record.record_type and path.name.startswith(record.id):
            doomed = store.tmp / f"deleting-{path.name}"
            os.rename(path, doomed)
            path.with_suffix(".id").unlink(missing_ok=True)
            rmtree(doomed, ignore_errors=True)
    return True


def apply_gc(store: Store, rules: Sequence[GCRule]) -> list[UsageRecord]:
    """Run each ``gcpolicy`` rule in order, as BuildKit does after builds (each rule carries
    on from what the one before left).

    The disk the store uses is first taken from what it keeps counted
    (:meth:`Store.accounted_bytes`: the layers made since the last GC are walked, no other):
    a rule whose ``keepBytes`` that total does not pass has nothing to free, and a rule
    without one looks at no size. The first rule with something to free has every record
    sized (:func:`disk_usage`, each inode in the oldest layer holding it), and that rule and
    the ones after it decide on those figures, as before. GC so costs the layers made since it
    last ran, not a walk of every layer: that was a second and more at the end of a build,
    once a minute, in a root of a few hundred layers.
    """
    removed: list[UsageRecord] = []
    with store.pruning:
        records, exact = disk_usage(store, walk=False), False
        total: int | None = None  # counted again only once a rule has deleted something
        for rule in rules:
            if rule.keep_bytes and not exact:
                if total is None:
                    directories = sum(r.size for r in records if r.mutable)  # mirrors, mounts
                    total = store.accounted_bytes() + directories
                if total <= rule.keep_bytes:
                    continue  # what _prune finds at once from the walk's figures
                records, exact = disk_usage(store), True
            gone, records = _prune(
                store,
                parse_filters(rule.filters),
                records,
                all=rule.all,
                keep_duration=rule.keep_duration,
                keep_bytes=rule.keep_bytes,
            )
            if gone:
                total = None
            removed += gone
        if removed:
            store.drop_unnamed_blobs()
    return removed
