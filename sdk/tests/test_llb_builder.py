"""The builder's options, each checked where BuildKit's client puts it in the op."""

from __future__ import annotations

import pytest

from llbkit.core.errors import UserError
from llbkit.core.llb import load_definition, pb
from llbkit.sdk import llb

AMD64 = llb.Platform("linux", "amd64")


def ops(state: llb.State) -> list[tuple[pb.Op, pb.OpMetadata]]:
    loaded = load_definition(state.marshal(AMD64).to_bytes())
    return [(v.op, v.metadata) for v in loaded.vertices[:-1]]


def last(state: llb.State) -> tuple[pb.Op, pb.OpMetadata]:
    return ops(state)[-1]


BASE = llb.image("busybox")


def test_states_are_immutable():
    a = BASE.with_env("A", "1")
    b = a.with_env("B", "2").with_dir("sub").with_user("nobody")
    assert a.env == (("A", "1"),) and a.cwd == "/" and a.user == ""
    assert b.env == (("A", "1"), ("B", "2")) and b.cwd == "/sub"
    assert b.with_env("A", "3").env == (("B", "2"), ("A", "3"))  # replaced values move last
    assert b.without_env("A").get_env("A") is None
    assert b.with_dir("/abs").with_dir("rel").cwd == "/abs/rel"


def test_run_args_shell_and_per_op_settings():
    op, _ = last(BASE.run("echo 'hello world'").root())
    assert list(op.exec.meta.args) == ["echo", "hello world"]
    op, _ = last(BASE.run(shell="echo $HOME").root())
    assert list(op.exec.meta.args) == ["/bin/sh", "-c", "echo $HOME"]
    state = BASE.with_env("KEEP", "1")
    op, _ = last(state.run(["env"], env={"X": "y"}, cwd="/tmp", user="1:2", hostname="h").root())
    assert list(op.exec.meta.env) == ["KEEP=1", "X=y"]
    assert (op.exec.meta.cwd, op.exec.meta.user, op.exec.meta.hostname) == ("/tmp", "1:2", "h")
    assert op.exec.meta.removeMountStubsRecursive
    assert state.env == (("KEEP", "1"),)  # per-op settings do not leak back
    # nor forward, into the next op on the result (Go's Run returns the state it was given)
    after = state.run(["true"], env={"X": "y"}, user="1:2", network="none", security="insecure")
    op, _ = last(after.root().run(["true"]).root())
    assert (list(op.exec.meta.env), op.exec.meta.user) == (["KEEP=1"], "")
    assert (op.exec.network, op.exec.security) == (pb.UNSET, pb.SANDBOX)
    with pytest.raises(ValueError):
        BASE.run()


def test_network_security_ulimits_cgroup_and_their_caps():
    state = BASE.with_network("none").with_security("insecure").with_ulimit("nofile", 1024, 2048)
    op, meta = last(state.with_cgroup_parent("/llb").run(["true"]).root())
    assert (op.exec.network, op.exec.security) == (pb.NONE, pb.INSECURE)
    assert [(u.Name, u.Soft, u.Hard) for u in op.exec.meta.ulimit] == [("nofile", 1024, 2048)]
    assert op.exec.meta.cgroupParent == "/llb"
    for cap in ("exec.meta.network", "exec.meta.security", "exec.meta.ulimit", "exec.meta.base"):
        assert meta.caps[cap]


def test_mount_outputs_and_get_mount():
    other = llb.image("alpine")
    run = BASE.run(
        ["true"],
        mounts=[
            llb.Bind("/out", llb.scratch()),
            llb.Bind("/ro", other, readonly=True),
            llb.Bind("/tmpwork", other, output=False),
            llb.Cache("/cache", sharing="private"),
            llb.Tmpfs("/t"),
        ],
    )
    op, meta = last(run.get_mount("/out"))
    mounts = {m.dest: m for m in op.exec.mounts}
    assert [m.dest for m in op.exec.mounts] == ["/", "/cache", "/out", "/ro", "/t", "/tmpwork"]
    assert (mounts["/"].output, mounts["/out"].output) == (0, 1)
    assert mounts["/ro"].output == mounts["/tmpwork"].output == mounts["/cache"].output == -1
    assert mounts["/out"].input == -1  # scratch
    assert mounts["/ro"].input == mounts["/tmpwork"].input == 1  # one input for the same state
    assert (mounts["/cache"].cacheOpt.ID, mounts["/cache"].cacheOpt.sharing) == (
        "/cache",
        pb.PRIVATE,
    )
    assert mounts["/t"].mountType == pb.TMPFS and not meta.caps.get("exec.mount.tmpfs.size")
    with pytest.raises(KeyError, match="writable mounts: /, /out"):
        run.get_mount("/cache")


def test_readonly_rootfs_has_no_root_output():
    run = BASE.run(["true"], readonly_rootfs=True, mounts=[llb.Bind("/out", llb.scratch())])
    op, _ = last(run.get_mount("/out"))
    assert op.exec.mounts[0].readonly and op.exec.mounts[0].output == -1
    assert run.output is None


def test_secret_as_env_and_ssh_socket_defaults():
    op, meta = last(
        BASE.run(
            ["true"], mounts=[llb.Secret("tok", env="TOKEN", optional=True), llb.SSH(id="gh")]
        ).root()
    )
    assert [(s.ID, s.name, s.optional) for s in op.exec.secretenv] == [("tok", "TOKEN", True)]
    ssh = op.exec.mounts[-1]
    assert (ssh.dest, ssh.SSHOpt.ID, ssh.SSHOpt.mode) == ("/run/buildkit/ssh_agent.0", "gh", 0o600)
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in op.exec.meta.env
    assert meta.caps["exec.secretenv"] and meta.caps["exec.mount.ssh"]


def test_file_paths_follow_the_state_directory():
    src = llb.image("alpine").with_dir("/usr")
    state = BASE.with_dir("/app").file(
        llb.mkdir("data", 0o700, owner="1000:users")
        .mkfile("data/f", 0o1777, b"x", timestamp=1_000_000_000)
        .copy(src, "share/zoneinfo", "zones/", mode=0o644, include_patterns=["*.tab"])
        .rm("old*", allow_wildcard=True)
    )
    op, meta = last(state)
    actions = list(op.file.actions)
    assert actions[0].mkdir.path == "/app/data" and actions[0].mkdir.mode == 0o700
    owner = actions[0].mkdir.owner
    assert owner.user.byID == 1000 and owner.group.byName.name == "users"
    assert owner.group.byName.input == 0  # resolved against the state the actions apply to
    assert actions[1].mkfile.mode == 0o777 and actions[1].mkfile.timestamp == 1_000_000_000
    copy = actions[2].copy
    assert (copy.src, copy.dest, copy.mode) == ("/usr/share/zoneinfo", "/app/zones/", 0o644)
    assert list(copy.include_patterns) == ["*.tab"] and copy.timestamp == -1
    assert actions[3].rm.path == "/app/old*" and actions[3].rm.allowWildcard
    assert [a.input for a in actions] == [0, 2, 3, 4]  # chained after the two inputs
    assert [a.output for a in actions] == [-1, -1, -1, 0]
    assert meta.caps["file.base"]


def test_sources_options():
    op, meta = last(llb.image("alpine", resolve_mode="pull", layer_limit=2))
    assert dict(op.source.attrs) == {"image.resolvemode": "pull", "image.layerlimit": "2"}
    assert meta.caps["source.image.resolvemode"] and meta.caps["source.image.layerlimit"]
    op, meta = last(llb.http("https://h/f", uid=10, gid=20))
    assert dict(op.source.attrs) == {"http.uid": "10", "http.gid": "20"}
    assert meta.caps["soruce.http.uidgid"]
    assert not op.HasField("platform")
    op, meta = last(llb.git("git@github.com:moby/buildkit.git", "main", subdir="docs"))
    # Go's client names an SSH remote without its user (gitutil.ParseProtocol)
    assert op.source.identifier == "git://github.com/moby/buildkit.git#main:docs"
    assert op.source.attrs["git.mountsshsock"] == "default"
    assert op.source.attrs["git.fullurl"] == "git@github.com:moby/buildkit.git"
    op, _ = last(llb.oci_layout("store@sha256:" + "a" * 64, store_id="s", layer_limit=1))
    assert op.source.attrs["oci.store"] == "s" and op.platform.Architecture == "amd64"


def test_merge_and_diff_shortcuts():
    assert llb.merge([llb.scratch(), BASE]) is BASE
    assert llb.merge([]).output is None
    assert llb.diff(llb.scratch(), BASE) is BASE
    op, _ = last(llb.diff(BASE, llb.scratch()))
    assert (op.diff.lower.input, op.diff.upper.input) == (0, -1)


def test_shared_vertices_are_marshaled_once_and_metadata_lands_by_digest():
    a = BASE.run(["a"], custom_name="step a", progress_group=("g", "group")).root()
    b = BASE.run(["b"]).root()
    loaded = load_definition(llb.merge([a, b]).marshal(AMD64).to_bytes())
    kinds = [v.kind for v in loaded.vertices]
    assert kinds.count("source") == 1
    step_a = next(v for v in loaded.vertices if v.kind == "exec" and v.op.exec.meta.args == ["a"])
    assert step_a.metadata.description["llb.customname"] == "step a"
    assert (step_a.metadata.progress_group.id, step_a.metadata.progress_group.name) == (
        "g",
        "group",
    )
    assert loaded.terminal.metadata.caps["meta.description"]


def test_platform_defaults_to_the_host_and_follows_the_state():
    host = load_definition(BASE.marshal().to_bytes()).vertices[0].op.platform
    assert host.OS == "linux" and host.Architecture
    arm = BASE.with_platform(llb.Platform("linux", "arm64", "v8")).run(["true"]).root()
    op, _ = last(arm)
    assert (op.platform.Architecture, op.platform.Variant) == ("arm64", "v8")


def test_a_definition_read_back_marshals_as_it_was() -> None:
    """``llb.from_definition``, Go's ``NewDefinitionOp``: the ops come back byte for byte (with
    their metadata), so a graph built on them names the digests the original graph would."""
    from llbkit.sdk import llb

    built = llb.image("busybox").run(shell="echo hi > /x", custom_name="made").root()
    built = built.file(llb.mkdir("/d", 0o755))
    data = built.marshal().to_bytes()
    back = llb.from_definition(data)
    assert back.marshal().to_bytes() == data
    on_top = back.run(shell="cat /x").root().marshal()
    assert on_top.to_bytes() == built.run(shell="cat /x").root().marshal().to_bytes()
    assert any(m.description.get("llb.customname") == "made" for m in on_top.metadata.values())
    assert llb.from_definition(llb.scratch().marshal().to_bytes()).output is None
    with pytest.raises(UserError, match="invalid definition"):
        llb.from_definition(b"\xff\xff")


@pytest.mark.parametrize(
    ("remote", "identifier", "full_url", "ssh"),
    [  # what BuildKit v0.11.6's Go client (llb.Git(remote, "main")) marshals
        ("git@example.com:owner/repo.git", "example.com/owner/repo.git", "", True),
        ("https://host/repo.git", "host/repo.git", "", False),
        ("ssh://git@host/repo.git", "host/repo.git", "", True),
        ("host/repo", "host/repo", "https://host/repo", False),
        ("ssh://git@host:22/r.git", "host/22/r.git", "", True),
        ("git://h/r.git", "h/r.git", "", False),
        ("a.b@host.x:p", "a.b@host.x:p", "https://a.b@host.x:p", False),
        ("user_1@h:p", "h/p", "", True),
    ],
)
def test_git_remotes_are_named_as_gos_client_names_them(
    remote: str, identifier: str, full_url: str, ssh: bool
) -> None:
    op, _ = last(llb.git(remote, "main"))
    assert op.source.identifier == f"git://{identifier}#main"
    assert op.source.attrs["git.fullurl"] == (full_url or remote)
    assert ("git.mountsshsock" in op.source.attrs) == ssh
