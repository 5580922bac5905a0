"""``llbkit debug dump-llb`` against BuildKit v0.11.6's own output for the golden vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.core.llb import load_definition, marshal, pb

VECTORS = sorted((Path(__file__).parent / "vectors/llb").glob("*.pb"))


def llbkit(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "llbkit.core", *args], input=stdin, capture_output=True
    )


@pytest.mark.parametrize("vector", VECTORS, ids=lambda p: p.stem)
def test_dump_llb_prints_exactly_what_buildctl_printed(vector):
    result = llbkit("debug", "dump-llb", str(vector))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == vector.with_suffix(".json").read_bytes()


@pytest.mark.parametrize("vector", VECTORS[:2], ids=lambda p: p.stem)
def test_dump_llb_reads_standard_input(vector):
    for args in (("debug", "dump-llb"), ("debug", "dump-llb", "-")):
        result = llbkit(*args, stdin=vector.read_bytes())
        assert result.stdout == vector.with_suffix(".json").read_bytes()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda p: p.stem)
def test_every_op_and_definition_re_marshals_to_the_same_bytes(vector):
    data = vector.read_bytes()
    definition = pb.Definition.FromString(data)
    assert marshal(definition) == data
    loaded = load_definition(data, source=vector.name)
    expected = [
        json.loads(line)["Digest"] for line in vector.with_suffix(".json").read_text().splitlines()
    ]
    assert [v.digest for v in loaded.vertices] == expected
    for vertex in loaded.vertices:
        assert marshal(vertex.op) == vertex.data


def test_dot_draws_every_op_and_edge():
    vector = next(v for v in VECTORS if v.stem.startswith("v04"))
    result = llbkit("debug", "dump-llb", "--dot", str(vector))
    assert result.returncode == 0
    text = result.stdout.decode()
    assert text.startswith("digraph {\n") and text.endswith("}\n")
    loaded = load_definition(vector.read_bytes())
    for vertex in loaded.vertices:
        assert f'"{vertex.digest}" [label=' in text
    assert 'shape="invtriangle"' in text  # the merge
    assert 'label="git://github.com/moby/buildkit#v0.11.6"' in text or "git://" in text
    edges = sum(len(v.op.inputs) for v in loaded.vertices)
    assert text.count(" -> ") == edges
