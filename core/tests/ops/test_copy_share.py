"""Copies that share their source's inode: the same layers as copying, and no write reaches
an input layer.

Every shape is built twice from the same layers, once as the engine does it (links, the
overlay's upper written before it is mounted) and once forced to copy onto a mounted tree, and
the two layers' tars must be the same bytes.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llbkit.core.cache.layertar import tar_layer
from llbkit.core.cache.store import Chain, Store
from llbkit.core.llb import load_definition
from llbkit.core.snapshot.layers import make_whiteout
from llbkit.core.solver.ops.file import FileOp
from llbkit.sdk import llb

pytestmark = pytest.mark.root

AMD64 = llb.Platform("linux", "amd64")
T0 = 1_600_000_000_000_000_000
EPOCH = 1_700_000_000  # later than T0, earlier than now: only "now" times are clamped


def _ctx() -> llb.State:
    return llb.local("ctx")


def _base() -> llb.State:
    return llb.local("base")


class Harness:
    """A store holding a context layer and base layers, running file ops both ways."""

    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.tmp = tmp
        self.chains: dict[str, Chain] = {}

    def layer(self, name: str, fill: Callable[[Path], None], *, on: str | None = None) -> None:
        tree = self.store.stage() / "t"
        tree.mkdir(mode=0o755)
        fill(tree)
        parent = self.chains[on] if on else ()
        layer = self.store.commit_layer(tree, parent=parent[-1] if parent else None)
        self.chains[name] = (*parent, layer)

    def run(self, state: llb.State, *, reference: bool = False) -> Chain:
        loaded = load_definition(state.marshal(AMD64).to_bytes())
        vertex = loaded.by_digest[loaded.result.digest]
        inputs = []
        for item in vertex.op.inputs:
            ident = loaded.by_digest[item.digest].op.source.identifier
            inputs.append(self.chains[ident.removeprefix("local://")])
        op = FileOp(vertex)
        if reference:
            (chain,) = op._attempt(self.store, inputs, "ref", defer=False, share=False)
        else:
            (chain,) = op._run(self.store, inputs, "new")
        return chain

    def tar(self, chain: Chain) -> bytes:
        out = io.BytesIO()
        lowers = [self.store.layer_path(n) for n in reversed(chain[:-1])]
        tar_layer(self.store.layer_path(chain[-1]), out, self.store.format, EPOCH, lowers)
        return out.getvalue()

    def same_both_ways(self, state: llb.State) -> Path:
        """Build ``state`` both ways, check the layers' tars agree; the new layer's path."""
        new = self.run(state)
        ref = self.run(state, reference=True)
        assert _listing(self.tar(new)) == _listing(self.tar(ref))
        assert self.tar(new) == self.tar(ref)
        return self.store.layer_path(new[-1])


def _listing(data: bytes) -> list[tuple[object, ...]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [
            (m.name, m.type, oct(m.mode), m.uid, m.gid, m.mtime, m.size, m.linkname)
            for m in tar.getmembers()
        ]


def _fill_ctx(root: Path) -> None:
    (root / "app/sub").mkdir(parents=True)
    (root / "empty").mkdir()
    for n, rel in enumerate(["app/a.txt", "app/b.md", "app/sub/c.txt", "top.txt", "x.bin"]):
        (root / rel).write_bytes(f"data {n}\n".encode() * (n + 1))
    os.chmod(root / "app/b.md", 0o600)
    os.chown(root / "app/sub/c.txt", 1000, 1001)
    os.chmod(root / "x.bin", 0o4755)
    os.link(root / "app/a.txt", root / "app/hard.txt")
    os.symlink("a.txt", root / "app/link")
    os.setxattr(root / "top.txt", "user.note", b"kept")
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in [*dirs, *files]:
            os.utime(os.path.join(dirpath, name), ns=(T0, T0), follow_symlinks=False)
    os.utime(root, ns=(T0, T0))


def _fill_base(root: Path) -> None:
    (root / "data").mkdir(mode=0o750)
    os.chown(root / "data", 7, 8)
    (root / "data/old.txt").write_text("old\n")
    (root / "data/top.txt").write_text("replaced by the copy\n")
    (root / "real/deep").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    os.symlink("/real", root / "abs")
    os.symlink("real/deep", root / "rel")
    os.symlink("/data", root / "datalink")
    os.setxattr(root / "real", "user.dir", b"up")
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in [*dirs, *files]:
            os.utime(os.path.join(dirpath, name), ns=(T0, T0), follow_symlinks=False)


def _fill_upper_base(root: Path) -> None:
    (root / "real").mkdir()
    make_whiteout(str(root / "real"), "deep", "overlay")
    (root / "more").mkdir()
    (root / "more/f").write_text("f\n")


@pytest.fixture(params=["overlay", "oci"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with Store.open(tmp_path / "root", layer_format=request.param) as store:
        if store.format != request.param:
            pytest.skip("overlay mounts are not possible here")
        h = Harness(store, tmp_path)
        h.layer("ctx", _fill_ctx)
        h.layer("base", _fill_base)
        if store.format == "overlay":
            h.layer("base2", _fill_upper_base, on="base")
        yield h


def _copy(dest: str, src: str = "/", base: str = "base", **options: object) -> llb.State:
    options.setdefault("create_dest_path", True)
    options.setdefault("allow_wildcard", True)
    options.setdefault("allow_empty_wildcard", True)
    if src.endswith("/") or src == "/":
        options.setdefault("copy_dir_contents", True)
    return llb.local(base).file(llb.copy(_ctx(), src, dest, **options))


SHAPES: dict[str, Callable[[], llb.State]] = {
    "new directory": lambda: _copy("/new/dir/"),
    "directory of the base": lambda: _copy("/data/"),
    "a base file replaced": lambda: _copy("/data/", "/top.txt"),
    "through an absolute symlink": lambda: _copy("/abs/sub/"),
    "through a relative symlink": lambda: _copy("/rel/"),
    "to a symlinked directory": lambda: _copy("/datalink"),
    "one file under a new name": lambda: _copy("/real/renamed.txt", "/app/a.txt"),
    "a directory as itself": lambda: _copy("/real/", "/app", copy_dir_contents=False),
    "wildcard": lambda: _copy("/data/", "/app/*.txt"),
    "include and exclude": lambda: _copy(
        "/data/", include_patterns=["app", "top.txt"], exclude_patterns=["app/sub"]
    ),
    "chown falls back to a copy": lambda: _copy("/data/", owner="app"),
    "chmod falls back to a copy": lambda: _copy("/data/", mode=0o700),
    "fixed times fall back to a copy": lambda: _copy("/data/", timestamp=T0),
    "onto scratch": lambda: llb.scratch().file(
        llb.copy(_ctx(), "/", "/out/", copy_dir_contents=True, create_dest_path=True)
    ),
    "two copies of one source": lambda: llb.local("base").file(
        llb.copy(_ctx(), "/app", "/one", create_dest_path=True).copy(
            _ctx(), "/app", "/two", create_dest_path=True
        )
    ),
    "a dir over a base file fails alike": lambda: _copy("/data/old.txt", "/app"),
    "a missing parent fails alike": lambda: _copy("/nope/x", "/top.txt", create_dest_path=False),
    "an existing parent": lambda: _copy("/data/new.txt", "/app/b.md", create_dest_path=False),
    "on two base layers with a whiteout": lambda: _copy("/real/deep/", base="base2"),
    "into a directory of the upper base layer": lambda: _copy("/more/", base="base2"),
}

SHARED = {"new directory", "directory of the base", "through an absolute symlink", "onto scratch"}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shared_copies_make_the_same_layer_as_copies(harness: Harness, shape: str) -> None:
    if "base2" not in harness.chains and "base2" in str(SHAPES[shape]().marshal(AMD64).to_bytes()):
        pytest.skip("whiteouts of this form need an overlay store")
    state = SHAPES[shape]()
    try:
        layer = harness.same_both_ways(state)
    except Exception as err:  # both ways must fail alike
        with pytest.raises(type(err)) as again:
            harness.run(state, reference=True)
        # (the message names a path on the host, which differs from tree to tree)
        assert str(again.value).split(":")[0] == str(err).split(":")[0]
        return
    ctx = {p.lstat().st_ino for p in _ctx_file(harness, "").rglob("*")}
    links = {p.name for p in layer.rglob("*") if p.lstat().st_ino in ctx}
    if shape in SHARED:
        assert links, "nothing was shared"
    if "falls back" in shape:
        # only a file the option leaves as it was (c.txt is already app's) may be linked
        assert links <= {"c.txt"}


def test_a_shared_file_is_the_context_layer_inode_and_xattrs_are_never_shared(
    harness: Harness,
) -> None:
    layer = harness.same_both_ways(_copy("/new/"))
    ctx = harness.store.layer_path(harness.chains["ctx"][-1])
    assert (layer / "new/app/b.md").stat().st_ino == (ctx / "app/b.md").stat().st_ino
    assert (layer / "new/top.txt").stat().st_ino != (ctx / "top.txt").stat().st_ino
    # A source hard link stays one inode in the layer, and the tar says so.
    assert (layer / "new/app/a.txt").stat().st_ino == (layer / "new/app/hard.txt").stat().st_ino


def _ctx_file(harness: Harness, rel: str) -> Path:
    return harness.store.layer_path(harness.chains["ctx"][-1]) / rel


def test_mkfile_after_a_shared_copy_writes_a_private_copy(harness: Harness) -> None:
    state = llb.local("base").file(
        llb.copy(_ctx(), "/app", "/d", create_dest_path=True).mkfile("/d/a.txt", 0o644, b"new")
    )
    layer = harness.same_both_ways(state)
    assert _ctx_file(harness, "app/a.txt").read_bytes() == b"data 0\n"
    assert (layer / "d/a.txt").read_bytes() == b"new"
    # As a copy would have it: the copied hard link is the same file, so it changed too.
    assert (layer / "d/hard.txt").read_bytes() == b"new"
    assert stat.S_IMODE((layer / "d/a.txt").stat().st_mode) == 0o644


def test_unpacking_after_a_shared_copy_writes_private_copies(harness: Harness) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"tar"))
    harness.layer("tarball", lambda root: (root / "x.tar").write_bytes(archive.getvalue()))
    state = llb.local("base").file(
        llb.copy(_ctx(), "/app", "/d", create_dest_path=True).copy(
            llb.local("tarball"), "/x.tar", "/d/", attempt_unpack=True
        )
    )
    layer = harness.same_both_ways(state)
    assert _ctx_file(harness, "app/a.txt").read_bytes() == b"data 0\n"
    assert (layer / "d/a.txt").read_bytes() == b"tar"


def test_a_later_step_never_writes_the_shared_inode(harness: Harness) -> None:
    first = harness.run(_copy("/d/"))
    harness.chains["copied"] = first
    later = llb.local("copied").file(llb.mkfile("/d/app/b.md", 0o600, b"changed"))
    out = harness.run(later)
    assert _ctx_file(harness, "app/b.md").read_bytes() == b"data 1\n" * 2
    assert (harness.store.layer_path(first[-1]) / "d/app/b.md").read_bytes() == b"data 1\n" * 2
    with harness.store.view(out) as view:
        assert (view / "d/app/b.md").read_bytes() == b"changed"


def test_work_trees_and_seeds_never_hold_a_layer_inode(harness: Harness) -> None:
    from llbkit.core.solver.ops.exec import _seed

    chain = harness.run(_copy("/d/"))
    layer = harness.store.layer_path(chain[-1])
    tree = harness.store.work_tree(chain, "rw")
    try:
        (tree.path / "d/app/b.md").write_bytes(b"written")  # as a rw bind mount would
    finally:
        tree.close()
    assert (layer / "d/app/b.md").read_bytes() == b"data 1\n" * 2
    assert _ctx_file(harness, "app/b.md").read_bytes() == b"data 1\n" * 2
    seed = _seed(harness.store, chain)
    assert seed is not None
    cache = harness.tmp / "cache"
    cache.mkdir()
    seed(cache)  # a cache mount's first content
    assert (cache / "d/app/b.md").stat().st_ino != (layer / "d/app/b.md").stat().st_ino


def _inodes(store: Store, layer: int) -> set[int]:
    path = store.layer_path(layer)
    return {p.lstat().st_ino for p in path.rglob("*") if p.is_file() and not p.is_symlink()}


def _each_inode_in_one_layer(store: Store, chain: Chain) -> None:
    seen: set[int] = set()
    for layer in chain:
        mine = _inodes(store, layer)
        assert not mine & seen, f"layer {layer} holds inodes of a lower layer"
        seen |= mine


def test_a_second_copy_never_links_what_its_base_holds(harness: Harness) -> None:
    harness.chains["step1"] = harness.run(_copy("/tmp/", "/app/a.txt"))
    chain = harness.run(_copy("/data/", base="step1"))
    _each_inode_in_one_layer(harness.store, chain)
    ctx = _ctx_file(harness, "app/b.md").stat().st_ino
    assert ctx in _inodes(harness.store, chain[-1])  # the rest is still shared
    ref = harness.run(_copy("/data/", base="step1"), reference=True)
    assert harness.tar(chain) == harness.tar(ref)


def test_context_layers_of_one_mirror_count_as_one(harness: Harness) -> None:
    from llbkit.core.cache.shares import join_pool

    mirror = harness.tmp / "mirror"
    _fill_ctx(mirror)

    def from_mirror(root: Path) -> None:
        for path in sorted(mirror.rglob("*")):
            rel = path.relative_to(mirror)
            if path.is_dir() and not path.is_symlink():
                (root / rel).mkdir()
            else:
                os.link(path, root / rel, follow_symlinks=False)

    for name in ("ctx1", "ctx2"):
        harness.layer(name, from_mirror)
        join_pool(harness.store, harness.chains[name][-1], "local:mirror")
    harness.chains["step1"] = harness.run(
        llb.local("base").file(
            llb.copy(llb.local("ctx1"), "/app/a.txt", "/tmp/", create_dest_path=True)
        )
    )
    chain = harness.run(
        llb.local("step1").file(
            llb.copy(
                llb.local("ctx2"), "/", "/data/", copy_dir_contents=True, create_dest_path=True
            )
        )
    )
    _each_inode_in_one_layer(harness.store, chain)


def test_a_merge_copies_a_layer_holding_what_an_earlier_one_holds(harness: Harness) -> None:
    from llbkit.core.solver.ops.merge import _merge

    def linked(dest: str) -> Chain:
        return harness.run(
            llb.scratch().file(
                llb.copy(_ctx(), "/app", dest, copy_dir_contents=True, create_dest_path=True)
            )
        )

    one, two = linked("/one/"), linked("/two/")
    assert _inodes(harness.store, one[-1]) & _inodes(harness.store, two[-1])
    merged = _merge(harness.store, [harness.chains["base"], one, two])
    with harness.store.view(merged) as view:
        assert (view / "two/a.txt").stat().st_ino != (view / "one/a.txt").stat().st_ino
    if harness.store.format == "overlay":
        _each_inode_in_one_layer(harness.store, merged)
        assert harness.tar(merged) == harness.tar(two)  # the copy is the same layer
    else:
        (flat,) = merged
        assert all(m.type != tarfile.LNKTYPE or "hard" in m.name for m in _members(harness, flat))


def _members(harness: Harness, layer: int) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(harness.tar((layer,)))) as tar:
        return tar.getmembers()


def test_copying_from_a_layer_of_the_base_links_nothing(harness: Harness) -> None:
    chain = harness.run(_copy("/again/", base="ctx"))
    _each_inode_in_one_layer(harness.store, chain)


@pytest.mark.parametrize("layer_format", ["overlay", "oci"])
def test_a_cached_copy_and_a_new_context_never_meet_in_one_chain(
    tmp_path: Path, layer_format: str
) -> None:
    """The first copy is cached from the first build (it keys by ``a`` only); the second
    build's context layer links the same mirror files, ``a`` among them."""
    from core.tests.engine.helpers import build, open_engine
    from llbkit.core.cache.refs import ResultRef

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in "abc":
        (ctx / name).write_text(f"{name}\n")
    state = (
        llb.scratch()
        .file(llb.copy(llb.local("ctx"), "/a", "/tmp/", create_dest_path=True))
        .file(llb.copy(llb.local("ctx"), "/", "/data/", copy_dir_contents=True))
    )  # (no create_dest_path: the parent is checked in the unmounted upper)
    with open_engine(tmp_path / "root", layer_format=layer_format) as engine:
        build(engine, state, locals={"ctx": ctx})
        (ctx / "b").write_text("changed\n")
        outcome = build(engine, state, locals={"ctx": ctx})
        assert isinstance(outcome.result, ResultRef)
        _each_inode_in_one_layer(engine.store, outcome.result.chain)
        with engine.store.view(outcome.result.chain) as view:
            assert (view / "tmp/a").stat().st_ino != (view / "data/a").stat().st_ino
        if layer_format == "overlay":  # the rest is linked
            top = engine.store.layer_path(outcome.result.chain[-1])
            assert (top / "data/c").stat().st_nlink > 1


def test_a_chain_deeper_than_views_mount_is_linked_into_too(harness: Harness) -> None:
    if harness.store.format != "overlay":
        pytest.skip("oci trees are copies")
    below = "base"
    for n in range(17):
        harness.layer(f"deep{n}", lambda root, n=n: (root / f"l{n}").write_text(f"{n}\n"), on=below)
        below = f"deep{n}"
    layer = harness.same_both_ways(_copy("/data/", base=below))
    assert (layer / "data/app/b.md").stat().st_nlink > 1
