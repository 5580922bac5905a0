"""BuildKit's own cache keys, as llbkit computes them to find a step's record in a cache
BuildKit exported (llbkit.core.solver.buildkit_keys), against the records BuildKit v0.11.6
exported building every case whose LLB is compared (tests/differential/vectors/cachekeys/,
scripts/record_differential.py --cache-keys): each exec, file and merge op of llbkit's
frontend's definitions must be a record there, reached from each input by a link with its
selector, or from the build context by the record of its content key (of the context as the
client sends it)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.fs.buildkit_contenthash import BuildKitHasher, content_key
from llbkit.core.llb import load_definition
from llbkit.core.llb.definition import is_empty_definition
from llbkit.core.session.walker import walk
from llbkit.core.solver import buildkit_keys as bk
from tests.differential.harness import Case, load_cache_keys, load_vectors, push_images
from tests.differential.test_llb import CASES as LLB_CASES
from tests.differential.test_llb import frontend_definitions

RECORDED = load_cache_keys()
MAKERS = {
    "exec": bk.exec_cache_map,
    "file": bk.file_cache_map,
    "merge": bk.merge_cache_map,
    "diff": bk.diff_cache_map,
}
CASES = [c for c in LLB_CASES if c.name in RECORDED]

pytestmark = [pytest.mark.services]


@pytest.fixture(scope="module")
def registry(busybox_image: str) -> str:
    host = busybox_image.split("/", 1)[0]
    push_images(host)
    return host


def _short(digest: str) -> str:
    return digest[7:23]


def mismatches(
    definitions: list[bytes],
    records: dict[str, list[list[str]]],
    registry: str,
    context: Path | None = None,
) -> list[str]:
    """What BuildKit's records lack of the keys llbkit computes for ``definitions``."""
    found: list[str] = []
    for data in definitions:
        if not data or is_empty_definition(data):
            continue
        loaded = load_definition(data)
        used = {(i.digest, i.index) for v in loaded.vertices for i in v.op.inputs}
        # A client's directory has a random key in BuildKit, never exported: what reads it
        # is linked by the content it read alone (a link without a selector).
        local = {
            v.digest
            for v in loaded.vertices
            if v.kind == "source" and v.op.source.identifier.startswith("local://")
        }
        for vertex in loaded.vertices:
            make = MAKERS.get(vertex.kind)
            if make is None:
                continue
            if registry.encode() in vertex.data:  # this run's registry port: another key
                continue
            cmap = make(vertex.op)
            for output in sorted(o for d, o in used if d == vertex.digest):
                key = _short(bk.output_key(cmap.digest, output))
                if key not in records:
                    found.append(
                        f"{vertex.kind} op {vertex.digest[:19]} output {output}: no record {key}"
                    )
                    continue
                inputs = records[key]
                for index, selector in enumerate(cmap.selectors):
                    if vertex.op.inputs[index].digest in local:
                        reads = cmap.content[index]
                        source = loaded.by_digest[vertex.op.inputs[index].digest].op.source
                        if context is None or reads is None:
                            continue
                        sent = _sent(
                            context, source, context.parent / f"sent-{vertex.digest[7:19]}"
                        )
                        root = _short(bk.output_key(_content(sent, reads), -1))
                        if root not in records:
                            found.append(
                                f"{vertex.kind} op {vertex.digest[:19]} input {index}: no "
                                f"record {root} of the content it reads, {reads}"
                            )
                        continue
                    links = inputs[index] if index < len(inputs) else []
                    if _short(selector) not in links:
                        found.append(
                            f"{vertex.kind} op {vertex.digest[:19]} input {index}: selector "
                            f"{_short(selector) or '(none)'}, BuildKit's links {links}"
                        )
    return found


def _sent(context: Path, source: Any, where: Path) -> Path:
    """What the client sends of ``context`` for the local source ``source`` (its
    .dockerignore's excludes, followed paths), copied into ``where``: what BuildKit hashes."""
    attrs = source.attrs

    def patterns(key: str) -> list[str]:
        return list(json.loads(attrs[key])) if attrs.get(key) else []

    where.mkdir(exist_ok=True)
    listing = walk(
        context,
        include=patterns("local.includepattern"),
        exclude=patterns("local.excludepatterns"),
        follow_paths=patterns("local.followpaths"),
    )
    for batch in listing:
        for entry in batch:
            src, dest = context / entry.path, where / entry.path
            if src.is_symlink():
                dest.symlink_to(os.readlink(src))
                continue
            if src.is_dir():
                dest.mkdir()
            else:
                shutil.copy2(src, dest)
            os.chmod(dest, src.lstat().st_mode & 0o7777)
    return where


def _content(context: Path, reads: tuple[tuple[str, bool, bool], ...]) -> str:
    return content_key(BuildKitHasher(context, local=True), reads)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_buildkits_cache_keys(
    case: Case, registry: str, tmp_path: Path, record_property: Any
) -> None:
    record_property("category", "cache keys")
    definitions = frontend_definitions(case, registry, tmp_path)
    context = tmp_path / "context"  # the client's directory the frontend read
    problems = mismatches(definitions, RECORDED[case.name], registry, context)
    assert not problems, f"{case.name}:\n" + "\n".join(problems[:5])


def test_enough_cache_key_cases() -> None:
    assert len(CASES) >= 500
    assert {c.name for c, _ in load_vectors()} >= set(RECORDED)
