"""Property-based fuzzing of what reads hostile input: the Dockerfile parser and word expander,
the LLB loader, the layer (tar) applier and the config reader. Whatever the input, each either
works or raises its one-line ``UserError``; never another exception, never a write outside
its tree.

CI runs a bounded number of examples (about a minute in all). For a longer run by hand::

    LLBKIT_FUZZ_EXAMPLES=200000 .venv/bin/pytest -p no:cacheprovider tests/hostile/test_fuzz.py \\
        --hypothesis-seed=12345 --hypothesis-show-statistics

and record the seed and the counts; a failure prints the smallest input and how to replay it.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llbkit.core.config import load_config
from llbkit.core.errors import UserError
from llbkit.core.llb.definition import load_definition
from llbkit.core.snapshot.untar import apply_tar, unpack_layer
from llbkit.plugins.frontend_dockerfile.convert import BuildOptions, convert
from llbkit.plugins.frontend_dockerfile.parser import parse
from llbkit.plugins.frontend_dockerfile.shell import ExpansionError, expand, expand_words
from llbkit.sdk import llb

EXAMPLES = int(os.environ.get("LLBKIT_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints how to replay it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def one_line(err: BaseException) -> None:
    assert isinstance(err, UserError), f"{type(err).__name__}: {err}"
    assert "\n" not in str(err), str(err)


# -- Dockerfiles ------------------------------------------------------------------------------

_KEYWORDS = [
    "FROM", "RUN", "COPY", "ADD", "ARG", "ENV", "LABEL", "WORKDIR", "USER", "EXPOSE",
    "VOLUME", "ENTRYPOINT", "CMD", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD",
    "MAINTAINER", "from", "Run", "COPPY",
]  # fmt: skip
_PIECES = [
    "$A", "${A}", "${A:-x}", "${A:+y}", "${A?err}", "${", "}", "$", "'", '"', "\\", "\\\n",
    "\\\\", "=", "A=1", "B=$A$A", "--mount=type=cache,target=/c", "--mount=type=secret,id=s",
    "--mount=type=bind,from=s0,target=/b", "--mount=sharng=1", "--from=s0", "--chown=1:1",
    "--mount=type=tmpfs,target=/t,size=$A", "--mount=type=cache,target=/c,uid=$A,mode=$B,ro=$A",
    "--mount=type=ssh,required=$B,gid=", "--mount=type=$A,target=$B", "--chmod=$A",
    "--chmod=755", "--link", "--platform=linux/arm64", "--network=none", "AS s0", "scratch",
    "busybox", "[", "]", '["a", "b"]', "<<EOF", "EOF", "\n", " ", "\t", "# comment",
    "# syntax=x", "# escape=`", "`", "/x", ".", "..", "*", "a b", "\x00", "é",
]  # fmt: skip

_words = st.lists(st.sampled_from(_PIECES) | st.text(max_size=6), max_size=8).map("".join)
_lines = st.tuples(st.sampled_from(_KEYWORDS), st.lists(_words, max_size=5)).map(
    lambda t: " ".join([t[0], *t[1]])
)
_dockerfiles = st.lists(_lines, max_size=12).map(lambda ls: "FROM scratch\n" + "\n".join(ls))


async def _image(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    return "sha256:" + "0" * 64, b'{"config": {"Env": ["PATH=/bin"]}}'


@FUZZ
@given(_dockerfiles, st.dictionaries(st.sampled_from(["A", "B", "s"]), _words, max_size=3))
# Found by this test: an empty exec form (BuildKit: "arguments are required"), and its kin.
@example("FROM scratch\nRUN []", {})
@example("FROM scratch\nRUN --network=none [ ]\nCMD []\nENTRYPOINT []\nONBUILD RUN []", {})
@example("FROM scratch\nHEALTHCHECK CMD []\nSHELL []", {})
def test_dockerfiles_convert_or_are_refused_in_one_line(text: str, args: dict[str, str]) -> None:
    try:
        converted = anyio.run(convert, parse(text), BuildOptions(build_args=args), _image)
        converted.state.marshal(llb.Platform("linux", "amd64"))
    except Exception as err:
        one_line(err)


@FUZZ
@given(_words, st.dictionaries(st.sampled_from(["A", "B", "C"]), _words, max_size=3))
def test_words_expand_or_are_refused(word: str, env: dict[str, str]) -> None:
    try:
        expand(word, env)
        expand_words(word, env)
    except ExpansionError as err:
        one_line(err)


# -- LLB definitions --------------------------------------------------------------------------


def _valid() -> bytes:
    base = llb.image("docker.io/library/busybox:latest")
    state = base.run(["sh", "-c", "true"]).root().file(llb.mkfile("/f", 0o644, b"x"))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()


_VALID = _valid()


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.integers(0, len(_VALID)),
)
def test_mutated_definitions_load_or_are_refused(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for where, value in flips:
        data[where] = value
    try:
        load_definition(bytes(data[:cut] if cut else data))
    except Exception as err:
        one_line(err)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_are_no_definition(data: bytes) -> None:
    try:
        load_definition(data)
    except Exception as err:
        one_line(err)


# -- Layers -----------------------------------------------------------------------------------

_NAME_PARTS = ["a", "b", ".", "..", "...", "..data", ".wh.", ".wh..", ".wh..wh..opq", ".wh.a", ""]
_names = st.lists(st.sampled_from(_NAME_PARTS), min_size=1, max_size=4).map("/".join)
_KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]
_members = st.tuples(
    _names,
    st.sampled_from(_KINDS),
    st.sampled_from(["a", "../a", "/a", "../../outside", "b/a", "..", "/", ""]),
    st.binary(max_size=16),
    st.integers(0, 0o7777),
)


def _layer(members: list[tuple[str, bytes, str, bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data, mode in members:
            info = tarfile.TarInfo(name or ".")
            info.type, info.linkname, info.mode = kind, link, mode | 0o700
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def _listing(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@FUZZ
@given(st.lists(_members, max_size=10), st.booleans(), st.integers(0, 4096))
def test_layers_stay_in_their_tree(members: list, unpack: bool, cut: int) -> None:
    data = _layer(members)
    data = data[: len(data) - cut] if cut < len(data) else data
    with tempfile.TemporaryDirectory() as scratch:
        top = Path(scratch)
        (top / "outside").mkdir()
        (top / "outside" / "keep").write_text("keep")
        (top / "tree" / "a").mkdir(parents=True)
        (top / "tree" / "a" / "lower").write_text("lower")
        tree = top / "tree" / ("fresh" if unpack else "")
        tree.mkdir(exist_ok=True)
        before = _listing(top / "outside")
        try:
            if unpack:
                unpack_layer(io.BytesIO(data), str(tree), "oci")
            else:
                apply_tar(io.BytesIO(data), str(tree))
        except Exception as err:
            one_line(err)
        assert sorted(os.listdir(top)) == ["outside", "tree"]
        assert _listing(top / "outside") == before
        assert (top / "outside" / "keep").read_text() == "keep"


# -- Config files -----------------------------------------------------------------------------

_KEYS = [
    "root", "debug", "insecure-entitlements", "[worker.oci]", "[worker.containerd]",
    '[registry."r"]', "[[worker.oci.gcpolicy]]", "[grpc]", "[llbkit]", "mirrors", "http",
    "max-parallelism", "platforms", "gckeepstorage", "keepBytes", "keepDuration", "filters",
    "enabled", "binary", "labels", "address", "uid", "ca", "keypair",
]  # fmt: skip
_VALUES = [
    "0", "-1", "1", "2.5", "true", '"x"', '"linux/amd64"', '["linux/amd64"]', '["bogus"]',
    '"10GB"', '"1h"', "[]", "{}", '{a = 1}', "[1, 2]", '"unix:///x"', "1e400",
]  # fmt: skip
_toml_lines = st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES)).map(
    lambda kv: kv[0] if kv[0].startswith("[") else f"{kv[0]} = {kv[1]}"
)


@FUZZ
@given(
    st.lists(_toml_lines, max_size=10) | st.binary(max_size=64).map(lambda b: [b.decode("latin-1")])
)
def test_configs_load_or_are_refused_in_one_line(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "buildkitd.toml"
        path.write_text("\n".join(lines) + "\n", errors="surrogateescape")
        try:
            load_config(path)
        except Exception as err:
            one_line(err)
