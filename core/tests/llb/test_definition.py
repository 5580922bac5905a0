"""Malformed definitions: each is refused by ``dump-llb`` with one clear line, never a traceback."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llbkit.core.errors import DefinitionError
from llbkit.core.llb import digest_of, load_definition, marshal, pb

VECTORS = Path(__file__).resolve().parents[3] / "tests/vectors/llb"


def image(ref: str = "docker-image://docker.io/library/busybox:latest") -> pb.Op:
    op = pb.Op(source=pb.SourceOp(identifier=ref))
    op.platform.OS, op.platform.Architecture = "linux", "amd64"
    return op


def terminal(target: bytes, index: int = 0) -> pb.Op:
    return pb.Op(inputs=[pb.Input(digest=digest_of(target), index=index)])


def definition(*ops: pb.Op | bytes) -> bytes:
    raw = [op if isinstance(op, bytes) else marshal(op) for op in ops]
    return marshal(pb.Definition(**{"def": raw}))


def chain(*ops: pb.Op) -> bytes:
    """The ops, then a terminal naming the last one."""
    last = marshal(ops[-1])
    return definition(*ops, terminal(last))


def exec_on(base: pb.Op, **mount_changes: int) -> pb.Op:
    mount = pb.Mount(input=0, dest="/", output=0)
    for key, value in mount_changes.items():
        setattr(mount, key, value)
    op = pb.Op(inputs=[pb.Input(digest=digest_of(marshal(base)), index=0)])
    op.exec.meta.args.extend(["sh", "-c", "true"])
    op.exec.mounts.append(mount)
    return op


def file_op(base: pb.Op, *actions: pb.FileAction) -> pb.Op:
    op = pb.Op(inputs=[pb.Input(digest=digest_of(marshal(base)), index=0)])
    op.file.actions.extend(actions)
    return op


def mkdir(input: int, output: int, path: str = "/x") -> pb.FileAction:
    return pb.FileAction(
        input=input,
        secondaryInput=-1,
        output=output,
        mkdir=pb.FileActionMkDir(path=path, mode=0o755),
    )


def run_dump(data: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llbkit.core", "debug", "dump-llb"], input=data, capture_output=True
    )


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", "the input is empty"),
    "truncated": (
        lambda: (VECTORS / "v02-exec-mounts.pb").read_bytes()[:-7],
        "not an LLB definition",
    ),
    "random": (lambda: random.Random(7).randbytes(600), "not an LLB definition"),
    "one op": (lambda: definition(image()), "it has 1 op(s)"),
    "op does not parse": (
        lambda: definition(b"\x0a\xff\xff", terminal(b"\x0a\xff\xff")),
        "op 1 of 2",
    ),
    "duplicate op": (
        lambda: definition(image(), image(), terminal(marshal(image()))),
        "duplicate of op 1",
    ),
    # BuildKit v0.11.6's daemon panics on this one (nil pointer).
    "missing terminal input": (
        lambda: definition(image(), terminal(b"not there")),
        "the terminal op refers to sha256:",
    ),
    "terminal names a missing op": (
        lambda: definition(image(), pb.Op(inputs=[pb.Input(digest="sha256:" + "0" * 64)])),
        "the terminal op refers to sha256:0000",
    ),
    "terminal is not last": (
        lambda: definition(image(), terminal(marshal(image())), image("docker-image://x")),
        "must be the terminal op",
    ),
    "input not in definition": (
        lambda: chain(exec_on(image("docker-image://not-included"))),
        "which is not in the definition",
    ),
    "dangling op": (
        lambda: definition(image("docker-image://unused"), image(), terminal(marshal(image()))),
        "is not used by the result",
    ),
    "input index beyond outputs": (
        lambda: definition(image(), (e := _with_index(exec_on(image()), 3)), terminal(marshal(e))),
        "asks for output 3",
    ),
    "terminal index beyond outputs": (
        lambda: definition(image(), terminal(marshal(image()), index=1)),
        "the terminal op asks for output 1",
    ),
    "mount input out of range": (
        lambda: definition(image(), e := exec_on(image(), input=4), terminal(marshal(e))),
        "mounts[0].input is 4",
    ),
    "mount outputs not contiguous": (
        lambda: definition(image(), e := exec_on(image(), output=2), terminal(marshal(e))),
        "mounts[].output numbers [2]",
    ),
    "file action refers to a later action": (
        lambda: definition(
            image(), f := file_op(image(), mkdir(2, -1), mkdir(0, 0)), terminal(marshal(f))
        ),
        "actions[0].input is 2",
    ),
    "file outputs duplicated": (
        lambda: definition(
            image(), f := file_op(image(), mkdir(0, 0), mkdir(1, 0)), terminal(marshal(f))
        ),
        "actions[].output numbers [0, 0]",
    ),
    "merge input out of range": (
        lambda: definition(image(), m := _merge(image(), 5), terminal(marshal(m))),
        "merge.inputs[0].input is 5",
    ),
    "diff input out of range": (
        lambda: definition(image(), d := _diff(image(), 0, 9), terminal(marshal(d))),
        "diff.upper.input is 9",
    ),
    "owner input out of range": (
        lambda: definition(image(), f := file_op(image(), _chown_by_name(3)), terminal(marshal(f))),
        "owner.user.byName.input is 3",
    ),
    "op without body": (
        lambda: definition(
            image(),
            (x := pb.Op(inputs=[pb.Input(digest=digest_of(marshal(image())))])),
            terminal(marshal(x)),
        ),
        "has no op body",
    ),
}


def _with_index(op: pb.Op, index: int) -> pb.Op:
    op.inputs[0].index = index
    return op


def _merge(base: pb.Op, index: int) -> pb.Op:
    op = pb.Op(inputs=[pb.Input(digest=digest_of(marshal(base)))])
    op.merge.inputs.add(input=index)
    return op


def _diff(base: pb.Op, lower: int, upper: int) -> pb.Op:
    op = pb.Op(inputs=[pb.Input(digest=digest_of(marshal(base)))])
    op.diff.lower.input, op.diff.upper.input = lower, upper
    return op


def _chown_by_name(input: int) -> pb.FileAction:
    action = mkdir(0, 0)
    action.mkdir.owner.user.byName.name = "nobody"
    action.mkdir.owner.user.byName.input = input
    return action


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_definition_is_one_line(case):
    build, expected = CASES[case]
    result = run_dump(build())
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    assert stderr.startswith("error: <stdin>: ")
    assert stderr.count("\n") == 1, stderr
    assert expected in stderr
    assert "Traceback" not in stderr


def test_many_random_inputs_never_escape_as_tracebacks():
    rng = random.Random(1)
    good = (VECTORS / "v04-merge-git-http.pb").read_bytes()
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        try:
            load_definition(bytes(data))
        except DefinitionError as err:
            assert "\n" not in str(err)


def test_unreadable_file_names_the_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "debug", "dump-llb", str(tmp_path / "nope.pb")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        result.stderr == f"error: cannot read {tmp_path / 'nope.pb'}: No such file or directory\n"
    )


def test_loaded_definition_exposes_vertices_and_result():
    loaded = load_definition((VECTORS / "v05-diff.pb").read_bytes(), source="v05")
    assert [v.kind for v in loaded.vertices] == ["source", "exec", "diff", "terminal"]
    assert loaded.result.digest == loaded.vertices[2].digest
    assert loaded.by_digest[loaded.vertices[0].digest] is loaded.vertices[0]
    assert loaded.terminal.metadata.caps["constraints"]
