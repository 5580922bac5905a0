"""The Python builder reproduces BuildKit's Go client: the graphs of the golden vectors, rebuilt.

Op bytes, digests and metadata must be identical. Go orders the inputs of an exec or file op
by map iteration (random), so definition order is compared only where Go's is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llbkit.core.llb import load_definition, marshal, pb
from llbkit.sdk import llb

VECTORS = Path(__file__).parent / "vectors/llb"
AMD64 = llb.Platform("linux", "amd64")


def v01() -> llb.State:
    return llb.image("alpine:3.18")


def v02() -> llb.State:
    context = llb.local(
        "context",
        include_patterns=["src/**", "go.mod"],
        exclude_patterns=["**/*_test.go"],
        shared_key_hint="ctx",
        unique="8mkpsqctvx76fnfbse7kps927",
    )
    base = (
        llb.image("alpine:3.18")
        .with_env("CGO_ENABLED", "0")
        .with_dir("/work")
        .with_user("1000:1000")
        .with_network("none")
    )
    return base.run(
        ["sh", "-c", "make build"],
        mounts=[
            llb.Cache("/root/.cache", id="gocache", sharing="locked"),
            llb.Bind("/src", context, selector="/src", readonly=True),
            llb.Tmpfs("/tmp", size=64 << 20),
            llb.Secret("token", dest="/run/secrets/token"),
            llb.SSH(id="default"),  # the vector names the agent (Go leaves it unset)
        ],
        custom_name="build the thing",
    ).root()


def v03() -> llb.State:
    actions = (
        llb.mkdir("/out", 0o755, make_parents=True)
        .mkfile("/out/hello.txt", 0o644, b"hello\n", owner="10:20")
        .copy(
            llb.image("alpine:3.18"),
            "/etc/*.conf",
            "/out/etc/",
            follow_symlinks=True,
            create_dest_path=True,
            allow_wildcard=True,
        )
        .rm("/out/etc/unwanted.conf", allow_not_found=True)
    )
    return llb.scratch().file(actions)


def v04() -> llb.State:
    repo = llb.git("https://github.com/moby/buildkit.git", "v0.11.6", keep_git_dir=True)
    archive = llb.http(
        "https://example.com/archive.tar.gz",
        checksum="sha256:" + "0" * 64,
        filename="archive.tar.gz",
        chmod=0o600,
    )
    small = llb.scratch().file(llb.mkfile("/x", 0o644, b"x"))
    return llb.merge([repo, archive, small])


def v05() -> llb.State:
    base = llb.image("alpine:3.18")
    return llb.diff(base, base.run(["touch", "/new"]).root())


def v06() -> llb.State:
    busybox = llb.image("busybox", platform=llb.Platform("linux", "arm64", "v8"))
    return llb.scratch().file(
        llb.copy(busybox, "/bin/busybox", "/busybox", owner="nobody", copy_dir_contents=True)
    )


def v07() -> llb.State:
    base = (
        llb.image("alpine:3.18")
        .with_network("host")
        .with_security("insecure")
        .with_extra_host("db", "10.0.0.5")
        .with_hostname("builder")
    )
    return base.run(["apk", "add", "curl"], ignore_cache=True).root()


BUILDERS: dict[str, Callable[[], llb.State]] = {
    "v01-image": v01,
    "v02-exec-mounts": v02,
    "v03-fileop-chain": v03,
    "v04-merge-git-http": v04,
    "v05-diff": v05,
    "v06-copy-chown-platform": v06,
    "v07-exec-insecure-host": v07,
}
GO_ORDER_IS_RANDOM = {"v02-exec-mounts"}  # an exec with two inputs


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_reproduces_the_go_clients_ops_digests_and_metadata(name):
    expected = load_definition((VECTORS / f"{name}.pb").read_bytes(), source=name)
    ours = load_definition(BUILDERS[name]().marshal(AMD64).to_bytes(), source="builder")
    theirs = {v.digest: v for v in expected.vertices}
    mine = {v.digest: v for v in ours.vertices}
    assert sorted(mine) == sorted(theirs), "different ops"
    for digest, vertex in theirs.items():
        assert mine[digest].data == vertex.data
        assert marshal(mine[digest].metadata) == marshal(vertex.metadata), f"metadata of {digest}"
    assert ours.terminal.digest == expected.terminal.digest
    if name not in GO_ORDER_IS_RANDOM:
        assert [v.digest for v in ours.vertices] == [v.digest for v in expected.vertices]


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - GO_ORDER_IS_RANDOM))
def test_builder_writes_the_same_definition_bytes_as_llb_write_to(name):
    assert BUILDERS[name]().marshal(AMD64).to_bytes() == (VECTORS / f"{name}.pb").read_bytes()


def test_local_sources_get_a_random_unique_id_unless_pinned():
    first = llb.local("ctx").marshal(AMD64).to_pb()
    second = llb.local("ctx").marshal(AMD64).to_pb()
    assert getattr(first, "def")[0] != getattr(second, "def")[0]
    op = pb.Op.FromString(getattr(first, "def")[0])
    assert len(op.source.attrs["local.unique"]) == 25
    pinned = llb.local("ctx", session_id="s1").marshal(AMD64).to_pb()
    assert "local.unique" not in pb.Op.FromString(getattr(pinned, "def")[0]).source.attrs
