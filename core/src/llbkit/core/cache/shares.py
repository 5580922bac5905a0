"""Which layers hold the same inodes, so that no chain shows one inode in two of its layers.

A copy links the files of its source layer that it would copy unchanged
(:mod:`llbkit.core.ops.borrow`). Each layer's tar is the same as a copy's, since a layer holds
a linked inode at one path (or at the paths a copy would have hard-linked). But readers of a
tree of several layers (a directory or tarball export, a flattened layer, a computed diff)
pair paths by inode, as BuildKit's walkers do, and would show two layers' copies of a file as
a hard link. So a chain never holds one inode in two layers: a copy does not link an inode its
base already holds, and a merge that would bring two together copies the later layer.

The record is by pools of inodes. Every layer is its own pool (``L<id>``, all its files); a
local context's layers also share their mirror's (``local:<mirror>``); a layer that linked
files of another joins each of that layer's pools with the inode numbers it linked; a
flattened layer joins every pool of its layers, with all its files.
"""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from llbkit.core.fs.iterative import rmtree
from llbkit.core.snapshot.layers import copy_entry, copy_xattrs

if TYPE_CHECKING:
    from llbkit.core.cache.store import Chain, Store

__all__ = ["blocked", "join_pool", "record_flat", "record_links", "separate"]

Pools = dict[str, frozenset[int] | None]


def _pack(inodes: Iterable[int]) -> bytes:
    return array("Q", sorted(inodes)).tobytes()


def _unpack(data: bytes | None) -> frozenset[int] | None:
    if data is None:
        return None
    found = array("Q")
    found.frombytes(data)
    return frozenset(found)


def _pools(store: Store, layers: Sequence[int]) -> dict[int, Pools]:
    rows = store.db.layer_pools(layers)
    found: dict[int, Pools] = {}
    for layer in layers:
        pools: Pools = {f"L{layer}": None}
        pools.update({p: _unpack(i) for p, i in rows.get(layer, {}).items()})
        found[layer] = pools
    return found


def blocked(store: Store, source: int, base: Chain) -> frozenset[int] | None:
    """Inode numbers of the layer ``source`` that a copy onto ``base`` must not link
    (``None``: none may be linked)."""
    pools = _pools(store, (source, *base))
    wanted = pools[source]
    out: set[int] = set()
    for layer in base:
        for pool, inodes in pools[layer].items():
            if pool in wanted:
                if inodes is None:
                    return None
                out |= inodes
    return frozenset(out)


def record_links(store: Store, layer: int, source: int, inodes: Iterable[int]) -> None:
    """``layer`` holds these inodes of the layer ``source``."""
    packed = _pack(inodes)
    store.db.add_layer_pools(layer, dict.fromkeys(_pools(store, (source,))[source], packed))


def join_pool(store: Store, layer: int, pool: str) -> None:
    """Every file of ``layer`` may be in ``pool`` too (a local context's mirror)."""
    store.db.add_layer_pools(layer, {pool: None})


def record_flat(store: Store, flat: int, chain: Chain) -> None:
    """``flat`` holds the files of every layer of ``chain``."""
    pools: dict[str, bytes | None] = {}
    for layer_pools in _pools(store, chain).values():
        pools.update(dict.fromkeys(layer_pools))
    store.db.add_layer_pools(flat, pools)


def _overlap(mine: Pools, seen: dict[str, set[int] | None]) -> bool:
    for pool, inodes in mine.items():
        if pool not in seen:
            continue
        other = seen[pool]
        if inodes is None or other is None or inodes & other:
            return True
    return False


def separate(store: Store, chain: Chain) -> Chain:
    """``chain``, each layer holding inodes of an earlier one replaced by a private copy."""
    pools = _pools(store, chain)
    seen: dict[str, set[int] | None] = {}
    out: list[int] = []
    for layer in chain:
        mine, kept = pools[layer], layer
        if _overlap(mine, seen):
            kept = _private_copy(store, layer)
            mine = {f"L{kept}": None}
        for pool, inodes in mine.items():
            known = seen.get(pool, set())
            seen[pool] = None if inodes is None or known is None else known | inodes
        out.append(kept)
    return tuple(out)


def _private_copy(store: Store, layer: int) -> int:
    """A new layer with ``layer``'s entries (whiteouts and marks included), its own inodes."""
    stage = store.stage()
    try:
        tree = stage / "copy"
        _copy_tree(str(store.layer_path(layer)), str(tree))
        parent = store.db.parents_and_whiteouts((layer,)).get(layer, (None, False))[0]
        return store.commit_layer(tree, parent=parent, description=f"copy of layer {layer}")
    finally:
        rmtree(stage, ignore_errors=True)


def _copy_tree(src: str, dst: str) -> None:
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    stack = [(src, dst)]
    while stack:
        s, d = stack.pop()
        st = os.lstat(s)
        os.mkdir(d)
        copy_xattrs(s, d)  # the overlay marks (opaque) belong to the layer: kept
        dirs.append((d, st))
        with os.scandir(s) as it:
            for entry in it:
                target = os.path.join(d, entry.name)
                est = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(est.st_mode):
                    stack.append((entry.path, target))
                else:
                    copy_entry(entry.path, target, est, links)
    for path, st in reversed(dirs):
        os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
