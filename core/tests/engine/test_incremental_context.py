"""A context changed after a cached build: keyed and copied from what the sync changed, and
the same layers as a cold build of the same tree."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tarfile
from contextlib import closing
from pathlib import Path

import anyio

from llbkit.core.control import Controller, EmbeddedClient, ExporterRequest, SolveRequest, new_ref
from llbkit.core.fs.contenthash import ContentHasher
from llbkit.core.snapshot.layers import has_whiteouts
from llbkit.sdk import llb

from .helpers import PLATFORM, open_engine

DEFINITION = llb.scratch().file(llb.copy(llb.local("ctx"), "/", "/")).marshal(PLATFORM).to_bytes()


_ROWS = "SELECT id, size, whiteouts FROM layers"


def _layers(engine: Controller, ctx: Path, out: Path) -> list[str]:
    """The layer digests of the build's image, exported as an OCI tarball."""
    request = SolveRequest(
        ref=new_ref(),
        session=EmbeddedClient(locals={"ctx": ctx}),
        definition=DEFINITION,
        exporters=[ExporterRequest("oci", {"dest": str(out)})],
    )
    anyio.run(engine.solve, request)
    with tarfile.open(out) as tar:

        def read(name: str) -> dict[str, object]:
            member = tar.extractfile(name)
            assert member is not None
            loaded: dict[str, object] = json.load(member)
            return loaded

        index = read("index.json")
        manifest = read(f"blobs/sha256/{index['manifests'][0]['digest'][7:]}")  # type: ignore[index]
    return [layer["digest"] for layer in manifest["layers"]]  # type: ignore[attr-defined]


def _fill(ctx: Path) -> None:
    for n in range(40):
        (ctx / f"d{n % 4}" / "sub").mkdir(parents=True, exist_ok=True)
        (ctx / f"d{n % 4}" / ("sub" if n % 3 else "") / f"f{n}").write_bytes(os.urandom(n * 7))
    (ctx / "d1" / "sub" / "f1").chmod(0o600)
    os.symlink("d0/f0", ctx / "link")


def test_changes_after_a_cached_build_give_a_cold_builds_layers(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    _fill(ctx)

    def grow() -> None:
        (ctx / "d2" / "new").mkdir()
        (ctx / "d2" / "new" / "x").write_text("x")

    def replace_dir() -> None:
        shutil.rmtree(ctx / "d3")
        (ctx / "d3").write_text("a file now")

    edits = [
        lambda: (ctx / "d0" / "sub" / "f4").write_bytes(os.urandom(28)),
        lambda: (ctx / "d2" / "sub").chmod(0o700),
        grow,
        replace_dir,
        (ctx / "link").unlink,
    ]
    with open_engine(tmp_path / "warm") as engine:
        before = _layers(engine, ctx, tmp_path / "first.tar")
        for n, edit in enumerate(edits):
            edit()
            warm = _layers(engine, ctx, tmp_path / f"warm{n}.tar")
            with open_engine(tmp_path / f"cold{n}") as cold:
                assert warm == _layers(cold, ctx, tmp_path / f"cold{n}.tar"), n
            shutil.rmtree(tmp_path / f"cold{n}")
            assert warm != before, n
            before = warm
            # What the copy's key read instead of walking the context layer is what a walk finds,
            # and whether the layer holds whiteouts was recorded as its tree has them.
            with closing(sqlite3.connect(tmp_path / "warm" / "state.db")) as db:
                rows = {r[0]: bool(r[2]) for r in db.execute(_ROWS)}
            for layer, known in engine.store._digests.items():
                path = engine.store.layer_path(layer)
                assert rows[layer] == has_whiteouts(path, engine.store.format)
                walked = ContentHasher(engine.store.layer_path(layer))
                walked.checksum("/")
                assert {k: v for k, v in walked.digests().items() if k} == dict(known)


def test_a_linked_tree_is_the_tree_the_stat_of_each_entry_made(tmp_path: Path) -> None:
    """A context layer links the mirror's regular files without a stat each (their type from
    the listing): the same tree as the path that stats every entry (an oci store's, which
    must read names for whiteouts), into an empty directory or over one; and a context's
    ``.wh.`` names are whiteouts to an oci store, as a walk finds them."""
    from llbkit.core.snapshot.layers import apply_layer

    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    for n in range(30):
        (src / "a" / f"file-{n:04d}").write_bytes(os.urandom(n * 100))
    os.link(src / "a" / "file-0007", src / "a" / "b" / "same")
    os.symlink("short", src / "a" / "link")
    os.mkfifo(src / "a" / "fifo")
    os.chmod(src / "a" / "b", 0o750)

    def listing(root: Path) -> list[tuple[object, ...]]:
        found = []
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            linked = st.st_ino if path.is_file() and not path.is_symlink() else None
            found.append((str(path.relative_to(root)), st.st_mode, st.st_mtime_ns, linked))
        return found

    for over in (False, True):
        trees = {}
        for fmt in ("plain", "oci"):  # oci: each entry stat-ed (no .wh. name in this tree)
            dest = tmp_path / f"dest-{fmt}-{over}"
            dest.mkdir()
            if over:
                (dest / "a" / "file-0003").mkdir(parents=True)  # a directory a file replaces
                (dest / "a" / "file-0004").write_text("old")
            apply_layer(src, dest, fmt, hardlink=True)
            trees[fmt] = listing(dest)
        assert trees["plain"] == trees["oci"], over
        source = {e[0]: e[3] for e in listing(src)}
        assert all(e[3] == source[e[0]] for e in trees["plain"] if e[3] is not None)
    (src / "a" / "b" / ".wh..wh..opq").write_text("")
    (src / ".wh.gone").write_text("")
    for fmt in ("oci", "overlay"):
        dest = tmp_path / f"store-{fmt}"
        dest.mkdir()
        apply_layer(src, dest, "plain", hardlink=True)
        assert has_whiteouts(dest, fmt) == (fmt == "oci")


def test_the_local_source_hands_the_store_what_its_fetch_learned() -> None:
    """The solver gives the store what a local job's fetch learned through ``MirroredJob``
    (the mirror its files' inodes come from, their checksums); a job that stopped matching it
    would be summed again, silently slower."""
    from llbkit.core.sources._base import MirroredJob
    from llbkit.core.sources.image import ImageJob
    from llbkit.core.sources.local import LocalJob

    assert issubclass(LocalJob, MirroredJob)
    assert not issubclass(ImageJob, MirroredJob)


def test_the_context_step_shows_what_its_sync_transferred(tmp_path: Path) -> None:
    """As BuildKit's ``transferring context: 1.05MB``: a sub-task of the local source's step,
    counting the bytes of the files the sync wrote (none when nothing changed)."""
    ctx = tmp_path / "ctx"
    _fill(ctx)
    total = sum(p.stat().st_size for p in ctx.rglob("*") if p.is_file() and not p.is_symlink())

    def transferred(engine: Controller) -> list[int]:
        request = SolveRequest(
            ref=new_ref(), session=EmbeddedClient(locals={"ctx": ctx}), definition=DEFINITION
        )

        async def run() -> list[int]:
            await engine.solve(request)
            found = []
            async for batch in engine.status(request.ref):
                for status in batch.statuses:
                    if status.id == "transferring ctx:" and status.completed is not None:
                        found.append(status.current)
            return found

        return anyio.run(run)

    with open_engine(tmp_path / "root") as engine:
        assert transferred(engine) == [total]
        assert transferred(engine) == [0]
        (ctx / "d2" / "sub" / "f2").write_bytes(b"x" * 1234)
        assert transferred(engine) == [1234]
