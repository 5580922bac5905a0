"""A context changed after a cached build: keyed and copied from what the sync changed, and
the same layers as a cold build of the same tree."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import anyio

from llbkit.core.control import Controller, EmbeddedClient, ExporterRequest, SolveRequest, new_ref
from llbkit.core.fs.contenthash import ContentHasher
from llbkit.sdk import llb

from .helpers import PLATFORM, open_engine

DEFINITION = llb.scratch().file(llb.copy(llb.local("ctx"), "/", "/")).marshal(PLATFORM).to_bytes()


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
            # What the copy's key read instead of walking the context layer is what a walk finds.
            for layer, known in engine.store._digests.items():
                walked = ContentHasher(engine.store.layer_path(layer))
                walked.checksum("/")
                assert {k: v for k, v in walked.digests().items() if k} == dict(known)
