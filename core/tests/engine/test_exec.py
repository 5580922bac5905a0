"""Exec steps in real runc containers on a busybox image from a real registry."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.errors import UserError
from llbkit.core.solver.solver import BuildFailed
from llbkit.sdk import llb

from .helpers import PLATFORM, build, build_data, files, open_engine, ran
from .helpers import logs as helpers_logs

pytestmark = [pytest.mark.root, pytest.mark.services]


@pytest.fixture
def busybox(busybox_image: str) -> llb.State:
    return llb.image(busybox_image)


def outputs(engine, outcome, *names: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    found = files(engine, outcome)
    return {name: found.get(name, "<missing>") for name in names}


def test_run_env_cwd_user_and_logs(tmp_path: Path, busybox: llb.State) -> None:
    state = (
        busybox.with_env("GREETING", "hello")
        .with_dir("/work")
        .with_user("builder")
        .run(
            shell='echo "$GREETING from $(pwd) as $(id -u):$(id -g)" > /tmp/out; '
            'echo "PATH=$PATH"; echo oops >&2'
        )
        .root()
    )
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, state)
        assert outputs(engine, outcome, "tmp/out") == {"tmp/out": "hello from /work as 1000:1000\n"}
        assert "work" in files(engine, outcome)
        logs = helpers_logs(outcome)
        assert (1, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n") in logs
        assert (2, "oops\n") in logs
        # Nothing runs again; the image is resolved for its key alone, shown done as BuildKit
        # shows it on a rebuild.
        again = ran(build(engine, state))
        assert {n for n in again if not n.startswith("docker-image://")} == set()


def test_non_zero_exit_fails_with_buildkits_message(tmp_path: Path, busybox: llb.State) -> None:
    with open_engine(tmp_path / "root") as engine, pytest.raises(BuildFailed) as err:
        build(engine, busybox.run(shell="echo about to fail; exit 3").root())
    assert str(err.value).endswith(
        'process "/bin/sh -c echo about to fail; exit 3" did not complete successfully: '
        "exit code: 3"
    )
    assert err.value.log_tail == ["about to fail"]


def test_mounts_bind_cache_tmpfs_readonly_root(tmp_path: Path, busybox: llb.State) -> None:
    data = llb.scratch().file(llb.mkdir("/d", 0o755).mkfile("/d/in.txt", 0o644, b"input\n"))
    step = busybox.run(
        shell="cat /src/in.txt > /out/copied; echo $$ >> /cache/runs; "
        "cat /cache/runs | wc -l > /out/count; df -k /scratch | tail -1 > /out/tmpfs; "
        "touch /src/x 2>/dev/null && echo writable || echo readonly > /out/ro",
        mounts=[
            llb.Bind("/src", data, selector="/d", readonly=True),
            llb.Bind("/out", llb.scratch()),
            llb.Cache("/cache", id="counter", sharing="locked"),
            llb.Tmpfs("/scratch", size=1 << 20),
        ],
    )
    with open_engine(tmp_path / "root") as engine:
        outcome = build(engine, step.get_mount("/out"))
        got = files(engine, outcome)
        assert got["copied"] == "input\n" and got["count"] == "1\n" and got["ro"] == "readonly\n"
        assert got["tmpfs"].split()[1] == "1024"
        root = build(engine, step.root())
        assert not any(
            name.startswith(("src", "out", "cache", "scratch")) for name in files(engine, root)
        )  # mount stubs removed
        again = build(engine, step.get_mount("/out"), no_cache=True)
        assert files(engine, again)["count"] == "2\n"  # the cache mount was kept
        records = [
            r
            for r in __import__("llbkit.core.cache.usage", fromlist=["x"]).disk_usage(engine.store)
            if r.record_type == "exec.cachemount"
        ]
        assert len(records) == 1


def test_a_cache_with_an_input_is_a_cache_of_its_own(tmp_path: Path, busybox: llb.State) -> None:
    """As BuildKit keys a cache mount by its id and its input: the same id started from a
    directory with an owner and mode (what ``uid=``, ``gid=``, ``mode=`` make) is another cache
    than the plain one, whichever ran first; read-only caches and tmpfs mounts are read-only."""
    plain = busybox.run(shell="echo plain > /c/x", mounts=[llb.Cache("/c", id="one-id")])
    owner = llb.scratch().file(llb.mkdir("/cache", 0o750, owner="1000:2000"))
    owned = busybox.run(
        shell="stat -c '%a %u:%g' /c > /out; ls /c >> /out; "
        "(touch /ro/x && echo rw || echo ro) >> /out; (touch /t/x && echo rw || echo ro) >> /out",
        mounts=[
            llb.Cache("/c", id="one-id", source=owner, selector="/cache"),
            llb.Cache("/ro", id="other", readonly=True),
            llb.Tmpfs("/t", readonly=True),
        ],
    )
    with open_engine(tmp_path / "root") as engine:
        build(engine, plain.root())
        got = files(engine, build(engine, owned.root()))
    assert got["out"] == "750 1000:2000\nro\nro\n"


def test_mount_stubs_go_with_the_parents_made_for_them(tmp_path: Path, busybox: llb.State) -> None:
    """As BuildKit's recursive stub cleaner: the missing parents of a mount point go when
    left empty (a heredoc script at /dev/pipes leaves no /dev), one that was there stays."""
    base = busybox.file(llb.mkdir("/kept", 0o755))
    step = base.run(
        shell="echo ran > /out",
        mounts=[llb.Tmpfs("/dev/pipes/x"), llb.Tmpfs("/new/a/b"), llb.Tmpfs("/kept/m")],
    )
    with open_engine(tmp_path / "root") as engine:
        got = files(engine, build(engine, step.root()))
    assert got["out"] == "ran\n" and got["kept"] == "<dir>"
    assert not any(name.split("/")[0] in ("dev", "new") for name in got)
    assert "kept/m" not in got


def test_secret_never_reaches_the_store(tmp_path: Path, busybox: llb.State) -> None:
    secret = b"s3cr3t-value-4242"
    step = busybox.run(
        shell="wc -c < /run/secrets/token > /len; stat -c %a /run/secrets/token > /mode",
        mounts=[llb.Secret("token", dest="/run/secrets/token", mode=0o400)],
    ).root()
    data = step.marshal(PLATFORM).to_bytes()
    with open_engine(tmp_path / "root") as engine:
        client = EmbeddedClient(secrets={"token": secret})
        outcome = build_data(engine, data, client)
        got = files(engine, outcome)
        assert got["len"].strip() == str(len(secret)) and got["mode"] == "400\n"
    found = subprocess.run(
        ["grep", "-r", "-l", secret.decode(), str(tmp_path / "root")], capture_output=True
    )
    assert found.stdout == b""


def test_network_host_needs_the_entitlement(tmp_path: Path, busybox: llb.State) -> None:
    step = busybox.run(args=["true"], network="host").root()
    with open_engine(tmp_path / "root") as engine, pytest.raises(UserError) as err:
        build(engine, step)
    assert str(err.value) == "failed to solve: failed to load LLB: network.host is not allowed"


def test_missing_runtime_names_the_package(tmp_path: Path, busybox: llb.State) -> None:
    from llbkit.core.config import EngineConfig

    config = EngineConfig(worker={"binary": "no-such-runc"}, gc=False)
    with open_engine(tmp_path / "root", config=config) as engine, pytest.raises(BuildFailed) as err:
        build(engine, busybox.run(args=["true"]).root())
    assert "needs no-such-runc, which is not installed" in str(err.value)


def test_read_only_rootfs_and_network_none(tmp_path: Path, busybox: llb.State) -> None:
    step = busybox.run(
        shell="touch /x 2>/dev/null && echo rw > /out/fs || echo ro > /out/fs; "
        "ls /sys/class/net > /out/net",
        readonly_rootfs=True,
        network="none",
        mounts=[llb.Bind("/out", llb.scratch())],
    )
    with open_engine(tmp_path / "root") as engine:
        got = files(engine, build(engine, step.get_mount("/out")))
    assert got["fs"] == "ro\n" and got["net"] == "lo\n"


def test_an_ssh_mount_is_a_socket_of_its_own_to_the_agent(tmp_path: Path) -> None:
    """As BuildKit's: a step's SSH mount is a socket of its own, with the owner and mode the
    mount asks for (so a step's user other than root reaches the agent), every connection
    passed on to the client's agent."""
    import stat

    import anyio
    import anyio.abc

    from llbkit.core.solver.ops.exec import _agent_proxy

    agent = tmp_path / "agent.sock"

    async def scenario() -> tuple[os.stat_result, bytes]:
        listener = await anyio.create_unix_listener(agent)

        async def shout(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                async for data in stream:
                    await stream.send(data.upper())

        async with listener, anyio.create_task_group() as group:
            group.start_soon(listener.serve, shout)
            async with _agent_proxy(agent, tmp_path, 1000, 2000, 0o640) as path:
                found = os.stat(path)
                async with await anyio.connect_unix(path) as conn:
                    await conn.send(b"hello")
                    answer = await conn.receive()
            group.cancel_scope.cancel()
        return found, answer

    found, answer = anyio.run(scenario)
    assert answer == b"HELLO"
    assert stat.S_ISSOCK(found.st_mode) and stat.S_IMODE(found.st_mode) == 0o640
    assert (found.st_uid, found.st_gid) == (1000, 2000)


def test_ssh_agent_is_forwarded(tmp_path: Path, busybox: llb.State) -> None:
    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent is not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        step = busybox.run(
            shell="test -S /run/agent.sock && echo socket > /out/kind",
            mounts=[llb.SSH(dest="/run/agent.sock"), llb.Bind("/out", llb.scratch())],
        )
        data = step.get_mount("/out").marshal(PLATFORM).to_bytes()
        with open_engine(tmp_path / "root") as engine:
            client = EmbeddedClient(ssh={"default": sock})
            outcome = build_data(engine, data, client)
            assert files(engine, outcome) == {"kind": "socket\n"}
            with pytest.raises(BuildFailed) as err:
                build_data(engine, data, EmbeddedClient(), no_cache=True)
            assert 'no SSH key "" forwarded from the client' in str(err.value)
    finally:
        os.kill(pid, 15)
