"""Results for plugin tests that take the path production takes: a real chain of layers in a
real store, seen only through what the ``Result`` contract declares."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

from llbkit.core.plugins.context import BlobSource, LayerDescriptor, LayerOptions, Result

__all__ = ["StrictResult", "layered_result", "tree_key"]


def tree_key(root: Path) -> str:
    """A key for a tree's names and contents (what a test result is named by)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(
                path.read_bytes() if not path.is_symlink() else os.readlink(path).encode()
            )
    return "sha256:" + digest.hexdigest()


class StrictResult:
    """A result that has exactly the members the ``Result`` contract declares: a plugin that
    reaches for anything else (a chain, a store, a private helper) fails its kit."""

    __slots__ = ("_ref",)
    _ref: Result

    def __init__(self, ref: Result) -> None:
        object.__setattr__(self, "_ref", ref)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"{name!r} is not part of the Result contract (llbkit.core.plugins.Result: key, "
            "mount, layers, blob_path, blob_sources); a plugin may use only those"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Result is read-only")

    @property
    def key(self) -> str:
        return self._ref.key

    def mount(self) -> AbstractAsyncContextManager[Path]:
        return self._ref.mount()

    async def layers(self, options: LayerOptions) -> Sequence[LayerDescriptor]:
        return await self._ref.layers(options)

    async def blob_path(self, digest: str) -> Path:
        return await self._ref.blob_path(digest)

    def blob_sources(self, digest: str) -> Sequence[BlobSource]:
        return self._ref.blob_sources(digest)


def _split(tree: Path, lower: Path, upper: Path) -> None:
    """``lower`` gets the whole tree; ``upper`` the last file again (same bytes, same mode),
    with its parent directories: two layers whose merge is ``tree``."""
    shutil.copytree(tree, lower, symlinks=True)
    files = sorted(
        Path(top, name).relative_to(tree)
        for top, _, names in os.walk(tree)
        for name in names
        if Path(top, name).is_file() and not Path(top, name).is_symlink()
    )
    upper.mkdir()
    shutil.copystat(tree, upper)
    if not files:
        return
    last = files[-1]
    for parent in reversed(last.parents[:-1]):
        (upper / parent).mkdir(exist_ok=True)
        shutil.copystat(tree / parent, upper / parent)
    shutil.copy2(tree / last, upper / last)


@contextmanager
def layered_result(work: Path, tree: Path) -> Iterator[StrictResult]:
    """``tree`` as a result of two layers in a store under ``work``, as exporters receive
    results from the engine (layer blobs made on demand and kept), for the block."""
    from llbkit.core.cache.refs import ResultRef
    from llbkit.core.cache.store import Store

    store = Store.open(work / "kit-root", layer_format="oci")
    try:
        stage = store.stage()
        _split(tree, stage / "lower", stage / "upper")
        lower = store.commit_layer(stage / "lower", description="kit lower layer")
        upper = store.commit_layer(stage / "upper", parent=lower, description="kit upper layer")
        yield StrictResult(ResultRef(store, tree_key(tree), (lower, upper)))
    finally:
        store.close()
