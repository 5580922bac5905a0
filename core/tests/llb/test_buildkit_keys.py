"""BuildKit's cache map digests: what its key leaves out and keeps. That they equal BuildKit's
own is checked against the records BuildKit v0.11.6 exported for every differential case
(tests/differential/test_cache_keys.py); here, the rules, one by one."""

from __future__ import annotations

import hashlib

from llbkit.core.llb import pb
from llbkit.core.solver import buildkit_keys as bk

PLATFORM = pb.Platform(OS="linux", Architecture="amd64")
INPUT = pb.Input(digest="sha256:" + "1" * 64, index=0)
OTHER = pb.Input(digest="sha256:" + "2" * 64, index=0)


def run(*mounts: pb.Mount, meta: pb.Meta | None = None, inputs: int = 1) -> pb.Op:
    return pb.Op(
        inputs=[INPUT, OTHER][:inputs],
        exec=pb.ExecOp(meta=meta or pb.Meta(args=["sh", "-c", "true"], cwd="/"), mounts=mounts),
        platform=PLATFORM,
    )


def root(**kw: object) -> pb.Mount:
    return pb.Mount(input=0, dest="/", output=0, **kw)  # type: ignore[arg-type]


def test_go_json_escapes_as_go_does() -> None:
    assert bk.go_json({"a": "<&>", "b": "\x08\x0c\n\u2028é", "c": b"\x00\xff"}) == (
        b'{"a":"\\u003c\\u0026\\u003e","b":"\\u0008\\u000c\\n\\u2028\xc3\xa9","c":"AP8="}'
    )
    assert bk.go_json([None, True, 0, -1, []]) == b"[null,true,0,-1,[]]"


def test_a_plain_run_is_keyed_without_its_root_mount() -> None:
    doc = (
        b'{"Type":"buildkit.exec.v0","Exec":{"meta":{"args":["sh","-c","true"],"cwd":"/"}},'
        b'"OS":"linux","Arch":"amd64"}'
    )
    cmap = bk.exec_cache_map(run(root()))
    assert cmap.digest == "sha256:" + hashlib.sha256(doc).hexdigest()
    assert cmap.selectors == ("",)
    assert bk.exec_cache_map(run(root(readonly=True))).digest != cmap.digest


def test_an_exec_key_leaves_out_selectors_proxies_and_host_addresses() -> None:
    meta = pb.Meta(args=["true"], extraHosts=[pb.HostIP(Host="db", IP="10.0.0.1")])
    base = bk.exec_cache_map(
        run(root(), pb.Mount(input=1, dest="/m", output=-1), meta=meta, inputs=2)
    )
    meta.extraHosts[0].IP = "10.0.0.2"
    meta.proxy_env.http_proxy = "http://proxy"
    chosen = bk.exec_cache_map(
        run(root(), pb.Mount(input=1, dest="/m", output=-1, selector="a/b"), meta=meta, inputs=2)
    )
    assert chosen.digest == base.digest
    assert chosen.selectors == ("", "sha256:" + hashlib.sha256(b"/a/b").hexdigest())
    meta.extraHosts[0].Host = "cache"
    assert bk.exec_cache_map(run(root(), meta=meta)).digest != base.digest


def test_a_copy_is_keyed_by_its_sources_name_and_selected_by_its_path() -> None:
    def copy(src: str) -> pb.Op:
        action = pb.FileAction(
            input=0, secondaryInput=1, output=0, copy=pb.FileActionCopy(src=src, dest="/d")
        )
        return pb.Op(inputs=[INPUT, OTHER], file=pb.FileOp(actions=[action]))

    here, there = bk.file_cache_map(copy("/x/app")), bk.file_cache_map(copy("/y/app"))
    assert here.digest == there.digest
    assert here.selectors[0] == ""  # the input copied onto is not selected
    assert here.selectors[1] == "sha256:" + hashlib.sha256(b"/x/app").hexdigest()
    assert here.selectors[1] != there.selectors[1]


def test_a_chown_by_name_selects_the_users_and_groups_files() -> None:
    owner = pb.ChownOpt(
        user=pb.UserOpt(byName=pb.NamedUserOpt(name="app", input=1)),
        group=pb.UserOpt(byName=pb.NamedUserOpt(name="app", input=1)),
    )
    action = pb.FileAction(
        input=0, secondaryInput=-1, output=0, mkdir=pb.FileActionMkDir(path="/d", owner=owner)
    )
    cmap = bk.file_cache_map(pb.Op(inputs=[INPUT, OTHER], file=pb.FileOp(actions=[action])))
    # sorted high to low, joined with NUL
    assert cmap.selectors[1] == "sha256:" + hashlib.sha256(b"/etc/passwd\0/etc/group").hexdigest()


def test_a_records_digest_is_its_output_and_an_images_its_keys() -> None:
    assert bk.output_key("sha256:ab", 1) == "sha256:" + hashlib.sha256(b"sha256:ab@1").hexdigest()
    source = bk.source_digest("sha256:cd")
    assert source == "sha256:" + hashlib.sha256(b"buildkit.source.v0:sha256:cd").hexdigest()
    one, two = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert bk.chain_id([one]) == one
    assert (
        bk.chain_id([one, two]) == "sha256:" + hashlib.sha256(f"{one} {two}".encode()).hexdigest()
    )


def test_merge_and_diff_are_keyed_by_their_json_unhashed() -> None:
    """BuildKit v0.11 takes a merge's or diff's JSON itself as its cache map digest; these
    are the records BuildKit exported for ``merge([base, diff(base, base.run(...))])``."""
    merge = pb.Op(merge=pb.MergeOp(inputs=[pb.MergeInput(input=0), pb.MergeInput(input=1)]))
    lower, upper = pb.LowerDiffInput(input=0), pb.UpperDiffInput(input=1)
    diff = pb.Op(diff=pb.DiffOp(lower=lower, upper=upper))
    assert bk.output_key(bk.merge_cache_map(merge).digest, 0) == (
        "sha256:9db38c9fbc7fc1e9aabb09ff25344af3938ab8089c05ba20304d2f212694bf4c"
    )
    assert bk.output_key(bk.diff_cache_map(diff).digest, 0) == (
        "sha256:6624e1ee9a3c49438a8c3dd3eb70a76735d0760bc52f2bd1b2f62554e1d0de81"
    )
