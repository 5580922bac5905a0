"""LLB graphs with exec steps (on a busybox image) whose trees are compared with BuildKit's."""

from __future__ import annotations

from collections.abc import Callable

from llbkit.sdk import llb

ExecCase = Callable[[llb.State], llb.State]


def run_env_cwd_user(base: llb.State) -> llb.State:
    return (
        base.with_env("GREETING", "hi")
        .with_dir("/srv/sub")
        .with_user("builder")
        .run(
            shell='echo "$GREETING $(pwd) $(id -u):$(id -g) $(id -G)" > /tmp/who; '
            "env | sort | grep -v -e HOSTNAME -e OTEL -e TRACEPARENT > /tmp/env; touch own"
        )
        .root()
    )


def run_user_group(base: llb.State) -> llb.State:
    return base.with_user("1000:2000").run(shell="id > /tmp/id; touch /tmp/mine").root()


def run_mounts(base: llb.State) -> llb.State:
    data = llb.scratch().file(llb.mkdir("/d", 0o755).mkfile("/d/f", 0o644, b"from a bind\n"))
    step = base.run(
        shell="cp /in/f /out/copied; echo w > /rw/new; ls /in > /out/listing; "
        "echo x > /cache/y; mount | grep -c ' /scratch ' > /out/tmpfs",
        mounts=[
            llb.Bind("/in", data, selector="/d", readonly=True),
            llb.Bind("/out", llb.scratch()),
            llb.Bind("/rw", data, output=False),
            llb.Cache("/cache", id="vector-cache"),
            llb.Tmpfs("/scratch"),
        ],
    )
    return llb.merge([step.root(), step.get_mount("/out").file(llb.mkdir("/x", 0o700))])


def run_readonly_rootfs(base: llb.State) -> llb.State:
    step = base.run(
        shell="touch /nope 2>/dev/null; echo $? > /out/status",
        readonly_rootfs=True,
        mounts=[llb.Bind("/out", llb.scratch())],
    )
    return step.get_mount("/out")


def run_deletes_and_chmods(base: llb.State) -> llb.State:
    first = base.run(
        shell="mkdir -p /a/b && echo 1 > /a/b/f && echo 2 > /a/g && "
        "ln -s b/f /a/link && ln /a/g /a/hard"
    ).root()
    return first.run(shell="rm -r /a/b && chmod 600 /a/g && rm /bin/ls && mkdir /a/b").root()


def run_on_a_file_op(base: llb.State) -> llb.State:
    prepared = base.file(llb.mkdir("/data", 0o755).mkfile("/data/in", 0o644, b"abc\n"))
    return prepared.run(shell="wc -c < /data/in > /data/count; rm /data/in").root()


#: what each sandbox case writes to ``/out`` (tests/differential/sandbox.py's probes)
SANDBOX_PROBES = ("status", "id", "mounts", "dev", "paths", "namespaces", "mount", "privileged")


def _probed(base: llb.State, probes: tuple[str, ...], **options: object) -> llb.State:
    from tests.differential.sandbox import PROBES

    script = "".join(f"( {PROBES[name]} ) > /out/{name} 2>&1; " for name in probes)
    step = base.run(shell=script + "true", mounts=[llb.Bind("/out", llb.scratch())], **options)
    return step.get_mount("/out")


def run_sandboxed(base: llb.State) -> llb.State:
    return _probed(base, SANDBOX_PROBES)


def run_insecure(base: llb.State) -> llb.State:
    # Not "privileged": an insecure step may set the host's clock, and it would.
    safe = tuple(p for p in SANDBOX_PROBES if p != "privileged")
    return _probed(base, safe, security="insecure")


EXEC_CASES: dict[str, ExecCase] = {
    f.__name__: f
    for f in (
        run_env_cwd_user,
        run_user_group,
        run_mounts,
        run_readonly_rootfs,
        run_deletes_and_chmods,
        run_on_a_file_op,
        run_sandboxed,
        run_insecure,
    )
}
#: the entitlements a case's build is given (buildctl's ``--allow``)
ENTITLEMENTS = {"run_insecure": ["security.insecure"]}


def exec_definition(name: str, image: str) -> bytes:
    state = EXEC_CASES[name](llb.image(image))
    return state.marshal(llb.Platform("linux", "amd64")).to_bytes()
