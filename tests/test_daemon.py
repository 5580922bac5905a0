"""llbkitd end to end: a real daemon process on a real socket, llbkit's CLI as its client (and
a client speaking the gateway as buildctl's ``build`` does), beside the embedded engine."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.sdk import llb
from tests.test_cache_export_import import registry  # noqa: F401 - a fixture, used by name

pytestmark = [pytest.mark.root]

LLBKIT = [sys.executable, "-m", "llbkit.core"]
LLBKITD = [sys.executable, "-m", "llbkit.core.daemon.main"]
PLATFORM = llb.Platform("linux", "amd64")


def _definition(state: llb.State) -> bytes:
    return state.marshal(PLATFORM).to_bytes()


def _files() -> bytes:
    base = llb.scratch().file(llb.mkdir("/etc", 0o755).mkfile("/etc/app.conf", 0o644, b"x=1\n"))
    return _definition(base.file(llb.mkfile("/hello", 0o600, b"hello\n")))


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"llbkitd exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
            probe.connect(str(path))
            return
        time.sleep(0.05)
    raise AssertionError("llbkitd did not start listening")


@contextlib.contextmanager
def daemon(root: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    sock = root.parent / f"{root.name}.sock"
    proc = subprocess.Popen(
        [*LLBKITD, "--root", str(root), "--addr", f"unix://{sock}", *args],
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_socket(sock, proc)
        yield f"unix://{sock}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("daemon") / "root"
    with daemon(root) as (address, _):
        yield address


def client(address: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*LLBKIT, "--addr", address, *args], input=stdin, capture_output=True, timeout=300
    )


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_the_socket_is_for_root_and_the_daemons_group(served: str) -> None:
    mode = os.stat(served.removeprefix("unix://")).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_a_build_through_the_daemon_sends_its_outputs_to_the_client(
    served: str, tmp_path: Path
) -> None:
    tarball = tmp_path / "out.tar"
    done = client(
        served,
        "build",
        "--progress",
        "plain",
        "--output",
        f"type=tar,dest={tarball}",
        stdin=_files(),
    )
    assert done.returncode == 0, done.stderr
    assert "#2 mkfile /hello" in done.stderr.decode()
    members = _members(tarball.read_bytes())
    assert members["hello"] == b"hello\n"
    assert members["etc/app.conf"] == b"x=1\n"
    # The same build embedded gives the same archive.
    embedded = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "embedded"), "build", "--output", "type=tar,dest=-"],
        input=_files(),
        capture_output=True,
    )
    assert embedded.returncode == 0, embedded.stderr
    assert _members(embedded.stdout) == members
    # Standard output works too, and the second build is cached on the daemon.
    again = client(served, "build", "--progress", "plain", "--output", "type=tar", stdin=_files())
    assert again.returncode == 0, again.stderr
    assert again.stdout == tarball.read_bytes()
    assert "CACHED" in again.stderr.decode()


def test_workers_du_and_prune_answer_through_the_daemon(served: str) -> None:
    workers = client(served, "debug", "workers")
    assert workers.returncode == 0, workers.stderr
    assert "linux/amd64" in workers.stdout.decode()
    usage = client(served, "du")
    assert usage.returncode == 0, usage.stderr
    assert "Total:" in usage.stdout.decode()
    pruned = client(served, "prune", "--all")
    assert pruned.returncode == 0, pruned.stderr
    after = client(served, "du")
    assert "Total:\t\t0B" in after.stdout.decode(), after.stdout.decode()


def test_a_failing_step_fails_in_one_line_and_the_daemon_keeps_serving(served: str) -> None:
    garbage = client(served, "build", stdin=b"\x0a\x05not-a-definition")
    assert garbage.returncode == 1
    last = garbage.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("error: "), garbage.stderr
    assert "Traceback" not in garbage.stderr.decode()
    healthy = client(served, "debug", "workers")
    assert healthy.returncode == 0, healthy.stderr


def test_no_daemon_there_is_one_line(tmp_path: Path) -> None:
    done = client(f"unix://{tmp_path}/nothing.sock", "debug", "workers")
    assert done.returncode == 1
    message = done.stderr.decode().strip()
    assert message.startswith("error: cannot reach the daemon at unix://"), message
    assert len(message.splitlines()) == 1


def test_tcp_without_mutual_tls_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [*LLBKITD, "--root", str(tmp_path / "root"), "--addr", "tcp://127.0.0.1:0"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "TCP needs mutual TLS" in done.stderr.decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_mutual_tls_admits_only_clients_of_its_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    for name, authority in (("good", ca), ("stranger", other)):
        cert = authority.issue_cert(f"{name}@example.com")
        folder = tmp_path / name
        folder.mkdir()
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))  # both trust the daemon
        cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    port = _free_port()
    proc = subprocess.Popen(
        [
            *LLBKITD,
            "--root",
            str(tmp_path / "root"),
            "--addr",
            f"tcp://127.0.0.1:{port}",
            "--tlscacert",
            str(tmp_path / "ca.pem"),
            "--tlscert",
            str(tmp_path / "server.pem"),
            "--tlskey",
            str(tmp_path / "server.key"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.connect(("127.0.0.1", port))
                break
            time.sleep(0.05)
        address = f"tcp://127.0.0.1:{port}"
        good = client(address, "--tlsdir", str(tmp_path / "good"), "debug", "workers")
        assert good.returncode == 0, good.stderr
        stranger = client(address, "--tlsdir", str(tmp_path / "stranger"), "debug", "workers")
        assert stranger.returncode == 1
        anonymous = client(address, "--tlscacert", str(tmp_path / "ca.pem"), "debug", "workers")
        assert anonymous.returncode == 1
        plain = client(address, "debug", "workers")
        assert plain.returncode == 1
        for refused in (stranger, anonymous, plain):
            assert refused.stderr.decode().startswith("error: "), refused.stderr
            assert "Traceback" not in refused.stderr.decode()
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_frontend_outside_the_daemon_drives_the_build_through_the_gateway(
    served: str,
) -> None:
    """buildctl's ``build``: a Control.Solve with neither definition nor frontend, then the
    gateway's Ping, Solve, ReadFile and Return under the build's id."""
    import asyncio

    import grpc

    from llbkit.core.api._pb import control_pb2, control_pb2_grpc, gateway_pb2, gateway_pb2_grpc
    from llbkit.core.llb._pb import ops_pb2

    ref = "gatewaytest" + os.urandom(6).hex()
    definition = ops_pb2.Definition.FromString(_files())

    async def run() -> tuple[bytes, dict[str, str]]:
        async with grpc.aio.insecure_channel(f"unix:{served.removeprefix('unix://')}") as channel:
            control = control_pb2_grpc.ControlStub(channel)
            gateway = gateway_pb2_grpc.LLBBridgeStub(channel)
            meta = (("buildkit-controlapi-buildid", ref),)
            # As buildctl: the gateway's Ping may come before the build's Solve does.
            ping = asyncio.ensure_future(gateway.Ping(gateway_pb2.PingRequest(), metadata=meta))
            await asyncio.sleep(0.3)
            solving = asyncio.ensure_future(control.Solve(control_pb2.SolveRequest(Ref=ref)))
            pong = await ping
            assert {"solve.base", "return", "readfile"} <= {c.ID for c in pong.FrontendAPICaps}
            assert pong.Workers and pong.Workers[0].platforms
            solved = await gateway.Solve(
                gateway_pb2.SolveRequest(Definition=definition, allowResultReturn=True),
                metadata=meta,
            )
            result_ref = solved.result.ref.id
            read = await gateway.ReadFile(
                gateway_pb2.ReadFileRequest(Ref=result_ref, FilePath="/etc/app.conf"),
                metadata=meta,
            )
            missing = None
            try:
                await gateway.ReadFile(
                    gateway_pb2.ReadFileRequest(Ref=result_ref, FilePath="/nope"), metadata=meta
                )
            except grpc.aio.AioRpcError as err:
                missing = err
            assert missing is not None and missing.code() == grpc.StatusCode.NOT_FOUND
            await gateway.Return(
                gateway_pb2.ReturnRequest(
                    result=gateway_pb2.Result(
                        ref=gateway_pb2.Ref(id=result_ref), metadata={"k": b"v"}
                    )
                ),
                metadata=meta,
            )
            answer = await solving
            return read.Data, dict(answer.ExporterResponse)

    data, _ = asyncio.run(run())
    assert data == b"x=1\n"


def test_a_gateway_call_for_no_build_is_refused(served: str) -> None:
    import asyncio

    import grpc

    from llbkit.core.api._pb import gateway_pb2, gateway_pb2_grpc

    async def run() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"unix:{served.removeprefix('unix://')}") as channel:
            gateway = gateway_pb2_grpc.LLBBridgeStub(channel)
            try:
                await gateway.Return(gateway_pb2.ReturnRequest(), metadata=(), timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    assert asyncio.run(run()) == grpc.StatusCode.NOT_FOUND


DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size && echo ran > /ran
COPY a.txt sub /app/
"""


@pytest.mark.services
def test_a_dockerfile_build_reads_the_clients_context_and_secrets(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The context and the secret cross the session; the output lands in the client's
    directory; the result matches the embedded build's."""
    ctx = tmp_path / "ctx"
    args = _dockerfile_args(ctx, registry, dockerfile=DOCKERFILE)
    args += ["--secret", f"id=tok,src={tmp_path / 'tok'}"]
    (ctx / "sub").mkdir()
    (ctx / "a.txt").write_text("aaa\n")
    (ctx / "sub" / "s.txt").write_text("sss\n")
    (tmp_path / "tok").write_text("twelve chars")
    with daemon(tmp_path / "root") as (address, _):
        done = client(address, *args, "--output", f"type=local,dest={tmp_path / 'remote'}")
        assert done.returncode == 0, done.stderr
        (ctx / "a.txt").write_text("changed\n")  # a second build sends only what changed
        again = client(address, *args, "--output", f"type=local,dest={tmp_path / 'again'}")
        assert again.returncode == 0, again.stderr
    embedded = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "embedded"), *args],
        input=b"",
        capture_output=True,
    )
    assert embedded.returncode == 0, embedded.stderr
    remote = tmp_path / "remote"
    assert (remote / "secret-size").read_text().strip() == "12"
    assert (remote / "ran").read_text() == "ran\n"
    assert (remote / "app/a.txt").read_text() == "aaa\n"
    assert (remote / "app/s.txt").read_text() == "sss\n"
    assert (tmp_path / "again/app/a.txt").read_text() == "changed\n"
    assert "twelve chars" not in done.stderr.decode()
    for path in (tmp_path / "root").rglob("*"):  # the daemon kept no copy of the secret
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
            assert b"twelve chars" not in path.read_bytes(), path


def _sleepers(marker: str) -> int:
    found = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True)
    return len(found.stdout.split())


def _dockerfile_args(ctx: Path, host: str, run: str = "", dockerfile: str = "") -> list[str]:
    """``build`` of a Dockerfile in ``ctx`` (``FROM`` the registry's busybox, then ``RUN run``
    unless a whole ``dockerfile`` is given) with ``ctx`` as its context."""
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile or f"ARG BASE\nFROM ${{BASE}}\nRUN {run}\n")
    return [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={ctx}",
        "--opt",
        f"build-arg:BASE={host}/library/busybox",
    ]


def _until(check: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


@pytest.mark.services
def test_a_client_that_goes_away_cancels_only_its_own_build(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    with daemon(tmp_path / "root") as (address, _):
        doomed = subprocess.Popen(
            [*LLBKIT, "--addr", address, *_dockerfile_args(tmp_path / "a", registry, "sleep 91")],
            stderr=subprocess.DEVNULL,
        )
        other = subprocess.Popen(
            [
                *LLBKIT,
                "--addr",
                address,
                *_dockerfile_args(tmp_path / "b", registry, "sleep 3 && echo other > /o"),
            ],
            stderr=subprocess.PIPE,
        )
        _until(lambda: _sleepers("91") == 1, "the doomed build runs its step")
        doomed.kill()
        doomed.wait()
        _until(lambda: _sleepers("91") == 0, "the daemon stops the step of a client gone", 15)
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        after = client(address, "debug", "workers")
        assert after.returncode == 0, after.stderr


@pytest.mark.services
def test_a_daemon_killed_mid_build_restarts_clean(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Its step's container is stopped when it starts again; the next build succeeds."""
    root = tmp_path / "root"
    with daemon(root) as (address, proc):
        running = subprocess.Popen(
            [*LLBKIT, "--addr", address, *_dockerfile_args(tmp_path / "a", registry, "sleep 92")],
            stderr=subprocess.PIPE,
        )
        _until(lambda: _sleepers("92") == 1, "the build runs its step")
        proc.kill()
        proc.wait()
        _, err = running.communicate(timeout=60)
        assert running.returncode == 1
        assert err.decode().strip().splitlines()[-1].startswith("error: "), err
        assert _sleepers("92") == 1  # nobody stopped it yet
    with daemon(root) as (address, _):
        assert _sleepers("92") == 0
        again = client(address, *_dockerfile_args(tmp_path / "b", registry, "echo fine > /f"))
        assert again.returncode == 0, again.stderr
        usage = client(address, "du")
        assert usage.returncode == 0, usage.stderr


@pytest.mark.services
def test_ten_clients_at_once_share_the_steps_they_have_in_common(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The shared step runs once (every image holds the same stamp it wrote); each client
    gets its own last step."""
    shared = "sleep 1 && cat /proc/sys/kernel/random/uuid > /stamp"
    with daemon(tmp_path / "root") as (address, _):
        clients = []
        for n in range(10):
            ctx = tmp_path / f"c{n}"
            text = f"ARG BASE\nFROM ${{BASE}}\nRUN {shared}\nRUN echo {n} > /mine\n"
            args = _dockerfile_args(ctx, registry, dockerfile=text)
            clients.append(
                subprocess.Popen(
                    [*LLBKIT, "--addr", address, *args, "--output", f"type=local,dest={ctx}/out"],
                    stderr=subprocess.PIPE,
                )
            )
        for proc in clients:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    stamps = {(tmp_path / f"c{n}/out/stamp").read_text() for n in range(10)}
    assert len(stamps) == 1, stamps
    assert [(tmp_path / f"c{n}/out/mine").read_text() for n in range(10)] == [
        f"{n}\n" for n in range(10)
    ]
