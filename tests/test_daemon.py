"""llbkitd end to end: a real daemon process on a real socket, llbkit's CLI as its client (and
a client speaking the gateway as buildctl's ``build`` does), beside the embedded engine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from llbkit.sdk import llb
from tests.hostile.relay import CountingRelay
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
def daemon(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    sock = root.parent / f"{root.name}.sock"
    proc = subprocess.Popen(
        [*LLBKITD, "--root", str(root), "--addr", f"unix://{sock}", *args],
        stderr=subprocess.PIPE,
        env=env,
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


def client(
    address: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*LLBKIT, "--addr", address, *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        env=env,
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


def test_a_failures_dockerfile_lines_come_as_buildkits_typed_detail(
    served: str, tmp_path: Path
) -> None:
    """The lines above the error travel as buildkitd sends them (``errdefs.Source`` in the
    ``grpc-status-details-bin`` trailer), which buildctl prints; llbkit's client reads them
    from there too."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nFOO bar\n")
    args = ["--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local"]
    done = client(served, "build", *args, f"dockerfile={ctx}", "--progress", "quiet")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "Dockerfile:2\n--------------------\n   1 |     FROM scratch\n   2 | >>> FOO bar\n"
        "   3 |     \n--------------------\nerror: failed to solve: dockerfile parse error on "
        "line 2: unknown instruction: FOO (did you mean FROM?)\n"
    )


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


@contextlib.contextmanager
def tls_daemon(tmp_path: Path, clients: Mapping[str, Any]) -> Iterator[str]:
    """llbkitd on loopback TCP with mutual TLS, its CA a new ``trustme`` CA; each of
    ``clients`` (name -> the CA that signs it, ``None`` for the daemon's) gets a ``--tlsdir``
    folder ``tmp_path / name`` that trusts the daemon. Yields the address."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    for name, authority in clients.items():
        cert = (authority or ca).issue_cert(f"{name}@example.com")
        folder = tmp_path / name
        folder.mkdir()
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))  # all trust the daemon
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
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_mutual_tls_admits_only_clients_of_its_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    with tls_daemon(tmp_path, {"good": None, "stranger": trustme.CA()}) as address:
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
            # Another Solve naming the same ref takes nothing over: it is refused.
            stolen = None
            try:
                await control.Solve(control_pb2.SolveRequest(Ref=ref), timeout=30)
            except grpc.aio.AioRpcError as err:
                stolen = err.details()
            assert stolen is not None and "exists" in stolen, stolen
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


def _crossed(root: Path, names: list[str]) -> int:
    """The bytes of the fsutil packets a receiver gets for ``names`` (files of ``root``, each
    requested): each one's stat, its data and the empty packet that ends it, the listing's
    end, and FIN. BuildKit shows this count, not the files' sizes."""
    from llbkit.core.api._pb import fsutil_pb2

    packet = fsutil_pb2.Packet
    total = packet(type=packet.PACKET_STAT).ByteSize() + packet(type=packet.PACKET_FIN).ByteSize()
    for n, name in enumerate(names):
        st = (root / name).stat()
        entry = fsutil_pb2.Stat(
            path=name,
            mode=st.st_mode & 0o7777,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size,
            modTime=st.st_mtime_ns,
        )
        total += packet(type=packet.PACKET_STAT, stat=entry).ByteSize()
        data = (root / name).read_bytes()
        for at in range(0, len(data), 32 << 10):  # fsutil's chunks
            total += packet(
                type=packet.PACKET_DATA, ID=n, data=data[at : at + (32 << 10)]
            ).ByteSize()
        total += packet(type=packet.PACKET_DATA, ID=n).ByteSize()
    return total


def test_a_transfer_shows_what_crossed_as_buildkit_counts_it(served: str, tmp_path: Path) -> None:
    """``transferring context: 2B`` for a missing ``.dockerignore`` (the listing's end and
    FIN), and for the Dockerfile and the context the bytes of fsutil's packets, as buildctl
    shows them from BuildKit (a 25-byte Dockerfile is no "25B" there)."""
    ctx, dockerfile_dir = tmp_path / "ctx", tmp_path / "dockerfile"
    ctx.mkdir()
    dockerfile_dir.mkdir()
    (dockerfile_dir / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_bytes(os.urandom(50_000))  # two of fsutil's 32 KiB chunks
    (ctx / "b").write_text("bee")  # no COPY names it: as with BuildKit, it stays
    args = _context_build_args(ctx)
    args[args.index(f"dockerfile={ctx}")] = f"dockerfile={dockerfile_dir}"
    done = client(served, *args)
    assert done.returncode == 0, done.stderr
    shown = re.findall(r"transferring (\w+): (\S+) ", done.stderr.decode())
    dockerfile = _crossed(dockerfile_dir, ["Dockerfile"])
    context = _crossed(ctx, ["a"])
    assert sorted(shown) == sorted(
        [("context", "2B"), ("dockerfile", f"{dockerfile}B"), ("context", f"{context / 1e3:.2f}kB")]
    ), done.stderr


def test_the_dockerfile_is_found_as_buildkit_finds_it(served: str, tmp_path: Path) -> None:
    """Through the daemon, as BuildKit: a ``dockerfile`` when ``Dockerfile`` is missing, a
    Dockerfile that is a symlink followed inside the folder that was sent, and a symlink that
    leaves it resolved there too: never on the daemon's own disk (a client cannot have the
    daemon read its files)."""
    folder = tmp_path / "ctx"
    (folder / "real").mkdir(parents=True)
    (folder / "dockerfile").write_text("FROM scratch\nLABEL spelled=lower\n")
    done = client(served, *_context_build_args(folder))
    assert done.returncode == 0, done.stderr
    assert b"load build definition from Dockerfile" in done.stderr
    (folder / "dockerfile").unlink()
    (folder / "real" / "Df").write_text("FROM scratch\nLABEL linked=yes\n")
    (folder / "Dockerfile").symlink_to("real/Df")
    done = client(served, *_context_build_args(folder))
    assert done.returncode == 0, done.stderr
    daemons_own = tmp_path / "daemon-side" / "Df"
    daemons_own.parent.mkdir()
    daemons_own.write_text("FROM scratch\nLABEL read=daemon-side\n")
    (folder / "Dockerfile").unlink()
    (folder / "Dockerfile").symlink_to(daemons_own)
    done = client(served, *_context_build_args(folder))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        "error: failed to solve: failed to read dockerfile: open Dockerfile: "
        "no such file or directory"
    )


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
def test_sigterm_to_a_client_cancels_its_build_as_ctrl_c_does(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``kill`` (or a CI runner's stop) of ``llbkit --addr …``: one line, the step stopped by
    the daemon, nothing of the archive output left beside its destination."""
    out = tmp_path / "out"
    out.mkdir()
    with daemon(tmp_path / "root") as (address, _):
        argv = [*_dockerfile_args(tmp_path / "a", registry, "sleep 95"), "--progress=quiet"]
        running = subprocess.Popen(
            [*LLBKIT, "--addr", address, *argv, "--output", f"type=tar,dest={out / 'x.tar'}"],
            stderr=subprocess.PIPE,
        )
        _until(lambda: _sleepers("95") == 1, "the build runs its step")
        running.terminate()
        _, err = running.communicate(timeout=60)
        _until(lambda: _sleepers("95") == 0, "the daemon stops the step of a client gone", 15)
    assert running.returncode == 130, err
    assert err.decode().splitlines() == ["error: canceled"], err
    assert list(out.iterdir()) == []


@pytest.mark.services
def test_a_daemon_stopped_mid_build_lets_the_build_end_before_it_closes(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """SIGTERM while a step runs: the build is cancelled and ends (its step stopped, its
    mounts undone, its record kept as failed) before the daemon closes the root and exits."""
    root = tmp_path / "root"
    with daemon(root) as (address, proc):
        argv = [*_dockerfile_args(tmp_path / "a", registry, "sleep 93"), "--progress=quiet"]
        running = subprocess.Popen([*LLBKIT, "--addr", address, *argv], stderr=subprocess.PIPE)
        try:
            _until(lambda: _sleepers("93") == 1, "the build runs its step")
            proc.terminate()
            proc.wait(20)  # on its own: not the helper's kill after 30 s
        finally:
            running.kill()
            running.communicate()
    assert proc.returncode == 0
    assert _sleepers("93") == 0
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    records = [json.loads(p.read_text()) for p in (root / "history").glob("*.json")]
    assert [bool(r.get("error")) for r in records] == [True], records


@pytest.mark.services
def test_sigusr1_shows_what_every_task_and_thread_is_doing(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """A build that seems stuck is looked into without stopping the daemon: SIGUSR1 writes
    each task's await chain and each thread's stack to its stderr, and it goes on serving."""
    with daemon(tmp_path / "root") as (address, proc):
        lines: list[str] = []
        assert proc.stderr is not None
        stderr = proc.stderr

        def drain() -> None:  # all of it, so that the daemon never waits on a full pipe
            for line in iter(stderr.readline, b""):
                lines.append(line.decode(errors="replace"))

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        running = subprocess.Popen(
            [*LLBKIT, "--addr", address, *_dockerfile_args(tmp_path / "a", registry, "sleep 94")],
            stderr=subprocess.DEVNULL,
        )
        try:
            _until(lambda: _sleepers("94") == 1, "the build runs its step")
            proc.send_signal(signal.SIGUSR1)
            _until(lambda: any("most recent call first" in x for x in lines), "the dump", 30)
            text = "".join(lines)
            assert re.search(r"llbkitd: \d+ tasks", text), text
            assert "in run_exec" in text, text  # the step's task, awaiting its process
            assert "llbkitd: threads" in text, text
        finally:
            running.kill()
            running.wait()
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
def test_registry_connections_are_kept_between_builds(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """As buildkitd's transport keeps them: a warm build through the daemon asks the registry
    for the tag again, on the connection the first build opened (no new TCP or TLS handshake)."""
    relay = CountingRelay(registry)
    try:
        with daemon(tmp_path / "root") as (address, _):
            for _ in range(3):
                args = _dockerfile_args(tmp_path / "ctx", relay.host, "echo hi > /f")
                done = client(address, *args, "--progress", "plain")
                assert done.returncode == 0, done.stderr
                assert b"load metadata for " + relay.host.encode() in done.stderr
        assert relay.connections == 1
    finally:
        relay.close()


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


def test_registry_credentials_stay_with_the_client(tmp_path: Path) -> None:
    """The daemon asks the client's session for a private registry's credentials; it never
    lends its own, nor a token one client's credentials got, to another client."""
    import shutil

    from llbkit.sdk.testing.registry import LocalRegistry, layer_tar, push_image, registry_env

    if shutil.which("htpasswd") is None or shutil.which("docker-registry") is None:
        pytest.skip("htpasswd or docker-registry is not installed")
    made = subprocess.run(["htpasswd", "-Bbn", "tester", "right"], capture_output=True, check=True)
    (tmp_path / "htpasswd").write_bytes(made.stdout)
    with LocalRegistry(tmp_path / "private", htpasswd=tmp_path / "htpasswd") as private:
        push_image(
            private.host,
            "team/app:v1",
            [layer_tar({"app": "private\n"})],
            auth=("tester", "right"),
        )
        definition = _definition(llb.image(f"{private.host}/team/app:v1"))
        # The daemon itself could log in: it must not do so for its clients.
        daemon_env = registry_env(tmp_path / "daemon-home", private.host, "tester", "right")
        stranger = registry_env(tmp_path / "stranger", private.host, "tester", "wrong")
        nobody = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "empty")}
        owner = registry_env(tmp_path / "owner", private.host, "tester", "right")
        with daemon(tmp_path / "root", env=daemon_env) as (address, _):
            refused = client(address, "build", "--output", "type=tar", stdin=definition, env=nobody)
            assert refused.returncode == 1
            assert "needs credentials" in refused.stderr.decode(), refused.stderr
            pulled = client(address, "build", "--output", "type=tar", stdin=definition, env=owner)
            assert pulled.returncode == 0, pulled.stderr
            assert _members(pulled.stdout)["app"] == b"private\n"
            # What the owner's credentials got is not anyone else's.
            again = client(
                address,
                "build",
                "--no-cache",
                "--output",
                "type=tar",
                stdin=definition,
                env=stranger,
            )
            assert again.returncode == 1
            assert "access denied" in again.stderr.decode(), again.stderr
            assert b"right" not in again.stderr
            # Nor what another client resolved, asked for as "local".
            local = client(
                address,
                "build",
                "--output",
                "type=tar",
                stdin=_definition(llb.image(f"{private.host}/team/app:v1", resolve_mode="local")),
                env=nobody,
            )
            assert local.returncode == 1, local.stderr


def test_malformed_requests_get_errors_and_the_daemon_keeps_serving(served: str) -> None:
    """Sent as raw gRPC (llbkit's client checks a definition before sending it): ops that are
    not ops, inputs that name nothing, an exec with no mounts, a cycle, an unknown frontend."""
    import asyncio

    import grpc

    from llbkit.core.api._pb import control_pb2, control_pb2_grpc
    from llbkit.core.llb._pb import ops_pb2

    def definition(*ops: ops_pb2.Op | bytes) -> ops_pb2.Definition:
        """``ops`` and a terminal op naming the last of them, as a client marshals them."""
        import hashlib

        data = [o if isinstance(o, bytes) else o.SerializeToString() for o in ops]
        last = "sha256:" + hashlib.sha256(data[-1]).hexdigest()
        terminal = ops_pb2.Op(inputs=[ops_pb2.Input(digest=last, index=0)])
        d = ops_pb2.Definition()
        getattr(d, "def").extend([*data, terminal.SerializeToString()])
        return d

    missing = ops_pb2.Op(inputs=[ops_pb2.Input(digest="sha256:" + "0" * 64, index=0)])
    no_mounts = ops_pb2.Op(exec=ops_pb2.ExecOp(meta=ops_pb2.Meta(args=["true"])))
    bad_index = ops_pb2.Op(
        inputs=[ops_pb2.Input(digest="sha256:" + "1" * 64, index=7)],
        exec=ops_pb2.ExecOp(meta=ops_pb2.Meta(args=["true"]), mounts=[ops_pb2.Mount(dest="/")]),
    )
    requests = [
        control_pb2.SolveRequest(
            Ref="bad1" + os.urandom(4).hex(), Definition=definition(b"\xff\x00")
        ),
        control_pb2.SolveRequest(Ref="bad2" + os.urandom(4).hex(), Definition=definition(missing)),
        control_pb2.SolveRequest(
            Ref="bad3" + os.urandom(4).hex(), Definition=definition(no_mounts)
        ),
        control_pb2.SolveRequest(
            Ref="bad4" + os.urandom(4).hex(), Definition=definition(bad_index)
        ),
        control_pb2.SolveRequest(Ref="bad5" + os.urandom(4).hex(), Frontend="no.such.frontend"),
        control_pb2.SolveRequest(Ref="../../etc/passwd", Definition=definition(no_mounts)),
        # Well formed, and failing as it runs: a build's failure, answered as BuildKit answers.
        control_pb2.SolveRequest(
            Ref="bad6" + os.urandom(4).hex(),
            Definition=ops_pb2.Definition.FromString(
                llb.scratch()
                .run(args=["/no/such/binary"])
                .root()
                .marshal(llb.Platform("linux", "amd64"))
                .to_bytes()
            ),
        ),
    ]

    async def run() -> list[str]:
        async with grpc.aio.insecure_channel(f"unix:{served.removeprefix('unix://')}") as channel:
            control = control_pb2_grpc.ControlStub(channel)
            said = []
            for request in requests:
                try:
                    await control.Solve(request, timeout=60)
                except grpc.aio.AioRpcError as err:
                    said.append(err.details() or "")
                else:
                    said.append("")
            return said

    answers = asyncio.run(run())
    assert all(answers), answers  # every one refused
    assert len(set(answers)) == len(answers), answers  # each for its own reason
    assert all("\n" not in a.strip() and "Traceback" not in a for a in answers), answers
    # buildctl says "failed to solve: " before the answer itself, as BuildKit answers.
    assert not any(a.startswith("failed to solve:") for a in answers), answers
    assert client(served, "debug", "workers").returncode == 0


# Socket activation (fd://): systemd binds the socket and passes it as fd 3 with LISTEN_FDS and
# LISTEN_PID (the pid of the process it execs); this wrapper does the same, then execs llbkitd.
_ACTIVATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.dup2(fd, 3)\n"
    "fd == 3 or os.close(fd)\n"
    "os.environ.update(LISTEN_PID=sys.argv[2] or str(os.getpid()), LISTEN_FDS='1',"
    " LISTEN_FDNAMES='llbkitd.socket')\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n"
)


def _activated(
    listening: socket.socket, *args: str, pid: str = "", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """llbkitd started as systemd starts it for a .socket unit (``pid``: another LISTEN_PID)."""
    return subprocess.Popen(
        [sys.executable, "-c", _ACTIVATE, str(listening.fileno()), pid, *LLBKITD[1:], *args],
        pass_fds=(listening.fileno(),),
        stderr=subprocess.PIPE,
        env=env,
    )


def test_socket_activation_serves_the_socket_systemd_passes(tmp_path: Path) -> None:
    sock_path = tmp_path / "activated.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(sock_path))
    listening.listen()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = _activated(listening, "--root", str(tmp_path / "root"), "--addr", "fd://", env=env)
    address = f"unix://{sock_path}"
    try:
        # Asked at once: the connection waits in the socket's backlog until the daemon serves.
        workers = client(address, "debug", "workers")
        assert workers.returncode == 0, workers.stderr
        assert "linux/amd64" in workers.stdout.decode()
        ready = notify.recv(4096).decode()  # systemd's Type=notify
        assert "READY=1" in ready.splitlines(), ready
        assert f"MAINPID={proc.pid}" in ready.splitlines(), ready
        # A build whose outputs come back through the session, both ways over the relay.
        built = client(address, "build", "--output", "type=tar", stdin=_files())
        assert built.returncode == 0, built.stderr
        members = _members(built.stdout)
        assert members["hello"] == b"hello\n"
        assert members["etc/app.conf"] == b"x=1\n"
        # Several clients at once, each on its own relayed connection.
        many = [
            subprocess.Popen(
                [*LLBKIT, "--addr", address, "debug", "workers"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        assert [p.wait(120) for p in many] == [0] * 4
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert notify.recv(4096) == b"STOPPING=1"
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert f"on fd://3 (unix://{sock_path})" in log, log
    # The socket is systemd's: left in place, still listening, for the next start.
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(sock_path))
    listening.close()
    notify.close()


def test_socket_activation_refuses_what_it_cannot_serve_in_one_line(tmp_path: Path) -> None:
    root = str(tmp_path / "root")

    def refused(proc: subprocess.Popen[bytes]) -> str:
        assert proc.wait(60) == 1
        lines = proc.stderr.read().decode().strip().splitlines()  # type: ignore[union-attr]
        assert len(lines) == 1, lines
        return lines[0]

    plain = subprocess.Popen([*LLBKITD, "--root", root, "--addr", "fd://"], stderr=subprocess.PIPE)
    assert "--addr fd://: no sockets were passed by socket activation" in refused(plain)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "u.sock"))
    unix.listen()
    # Variables meant for another process pass nothing.
    elsewhere = _activated(unix, "--root", root, "--addr", "fd://", pid="1")
    assert "no sockets were passed" in refused(elsewhere)
    other_fd = _activated(unix, "--root", root, "--addr", "fd://4")
    assert "--addr fd://4: systemd passed fd 3 (named llbkitd.socket)" in refused(other_fd)
    other_name = _activated(unix, "--root", root, "--addr", "fd://other.socket")
    assert "--addr fd://other.socket: systemd passed fd 3" in refused(other_name)
    stdio = subprocess.Popen([*LLBKITD, "--root", root, "--addr", "fd://1"], stderr=subprocess.PIPE)
    assert "--addr fd://1: systemd passes sockets from fd 3 on" in refused(stdio)
    not_listening = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram = _activated(not_listening, "--root", root, "--addr", "fd://3")
    assert "--addr fd://3: not a listening stream socket" in refused(datagram)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    open_tcp = _activated(tcp, "--root", root, "--addr", "fd://")
    line = refused(open_tcp)
    assert line.startswith("llbkitd: error: --addr fd://3 (tcp://127.0.0.1:"), line
    assert "TCP needs mutual TLS" in line
    for sock in (unix, not_listening, tcp):
        sock.close()


def test_socket_activation_of_a_tcp_socket_keeps_mutual_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    for name, authority in (("good", ca), ("stranger", other)):
        cert = authority.issue_cert(f"{name}@example.com")
        (tmp_path / name).mkdir()
        ca.cert_pem.write_to_path(str(tmp_path / name / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / name / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / name / "key.pem"))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
    tls = ["--tlscacert", str(tmp_path / "ca.pem"), "--tlscert", str(tmp_path / "server.pem")]
    tls += ["--tlskey", str(tmp_path / "server.key")]
    proc = _activated(listening, "--root", str(tmp_path / "root"), "--addr", "fd://", *tls)
    try:
        good = client(address, "--tlsdir", str(tmp_path / "good"), "debug", "workers")
        assert good.returncode == 0, good.stderr
        stranger = client(address, "--tlsdir", str(tmp_path / "stranger"), "debug", "workers")
        assert stranger.returncode == 1
        plain = client(address, "debug", "workers")
        assert plain.returncode == 1
        assert "Traceback" not in stranger.stderr.decode() + plain.stderr.decode()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        listening.close()


def _history(address: str) -> list[dict[str, object]]:
    """``history ls --format json``: the daemon's builds, newest first."""
    import json

    listed = client(address, "history", "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.decode().splitlines()]


def _one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1, done
    err = done.stderr.decode()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err.strip()


@contextlib.contextmanager
def _following(address: str, **request: object) -> Iterator[list[tuple[str, str, str]]]:
    """``ListenBuildHistory`` read in a thread: (event type, ref, frontend) as they come."""
    import threading

    import grpc

    from llbkit.core.api._pb import control_pb2, control_pb2_grpc

    events: list[tuple[str, str, str]] = []
    channel = grpc.insecure_channel(f"unix:{address.removeprefix('unix://')}")
    call = control_pb2_grpc.ControlStub(channel).ListenBuildHistory(
        control_pb2.BuildHistoryRequest(**request)  # type: ignore[arg-type]
    )

    def follow() -> None:
        with contextlib.suppress(grpc.RpcError):
            for event in call:
                kind = control_pb2.BuildHistoryEventType.Name(event.type)
                events.append((kind, event.record.Ref, event.record.Frontend))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield events
    finally:
        call.cancel()
        thread.join(10)
        channel.close()


def test_history_logs_and_info_answer_through_the_daemon(served: str) -> None:
    import json
    import re

    from llbkit.core import __version__

    before = {r["ref"] for r in _history(served)}
    with _following(served) as events:
        built = client(served, "build", "--progress", "plain", "--no-cache", stdin=_files())
        assert built.returncode == 0, built.stderr
        (ref,) = {str(r["ref"]) for r in _history(served)} - before
        # Told as it happened: the build's start, then its end (no polling in between).
        _until(lambda: ("COMPLETE", ref, "") in events, "the build's end is told")
        assert events.index(("STARTED", ref, "")) < events.index(("COMPLETE", ref, ""))

        table = client(served, "history", "ls").stdout.decode().splitlines()
        assert table[0].split()[:3] == ["BUILD", "ID", "FRONTEND"]
        row = re.split(r"\s{2,}", next(line for line in table if line.startswith(ref)))
        assert row[1:3] == ["llb", "Completed"] and row[5] == "0/2", row
        logs = client(served, "debug", "logs", ref)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.decode() == built.stderr.decode()
        shown = client(served, "history", "inspect", ref).stdout.decode()
        assert re.search(r"^Status:\t+Completed$", shown, re.M), shown
        record = json.loads(client(served, "history", "inspect", "--format", "json", ref).stdout)
        assert record["ref"] == ref and record["num_total_steps"] == 2
        info = client(served, "debug", "info")
        assert info.stdout.decode() == f"BuildKit: llbkit {__version__} \n", info.stderr

        # Pinned as BuildKit's UpdateBuildHistory pins (no Delete): the record says so.
        import grpc

        from llbkit.core.api._pb import control_pb2, control_pb2_grpc

        with grpc.insecure_channel(f"unix:{served.removeprefix('unix://')}") as channel:
            control = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
            control.UpdateBuildHistory(control_pb2.UpdateBuildHistoryRequest(Ref=ref, Pinned=True))
            with pytest.raises(grpc.RpcError) as unknown:
                control.UpdateBuildHistory(
                    control_pb2.UpdateBuildHistoryRequest(Ref="nosuchbuild", Pinned=True)
                )
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        pinned = json.loads(client(served, "history", "inspect", "--format", "json", ref).stdout)
        assert pinned["pinned"] is True

        removed = client(served, "history", "rm", ref)
        assert removed.returncode == 0, removed.stderr
        _until(lambda: ("DELETED", ref, "") in events, "the deletion is told")
    assert ref not in {r["ref"] for r in _history(served)}
    gone = f"error: no build {ref} in the history"
    assert _one_line_error(client(served, "debug", "logs", ref)) == gone
    assert _one_line_error(client(served, "history", "rm", ref)) == gone
    bad = _one_line_error(client(served, "history", "inspect", "../x"))
    assert bad.startswith("error: invalid build ref '../x'"), bad


@pytest.mark.services
def test_a_running_build_is_listed_and_its_log_followed_through_the_daemon(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    import re

    args = _dockerfile_args(tmp_path / "ctx", registry, "echo begin && sleep 4 && echo end")
    with daemon(tmp_path / "root") as (address, _):
        running = subprocess.Popen(
            [*LLBKIT, "--addr", address, *args, "--progress", "plain"], stderr=subprocess.PIPE
        )
        try:
            found: list[dict[str, object]] = []

            def is_running() -> bool:
                found[:] = _history(address)
                return bool(found) and found[0]["status"] == "running"

            _until(is_running, "the build is listed as running")
            ref = str(found[0]["ref"])
            assert found[0]["frontend"] == "dockerfile.v0" and "completed_at" not in found[0]
            table = client(address, "history", "ls").stdout.decode().splitlines()
            row = re.split(r"\s{2,}", table[1])
            assert row[:3] == [ref, "dockerfile.v0", "Running"] and row[4].endswith("+"), row
            # ActiveOnly with EarlyExit: the running builds, and the stream ends.
            with _following(address, ActiveOnly=True, EarlyExit=True) as active:
                _until(lambda: active, "the running build is told")
            assert active == [("STARTED", ref, "dockerfile.v0")]
            still = _one_line_error(client(address, "history", "rm", ref))
            assert still == f"error: build {ref} is still running"
            logs = client(address, "debug", "logs", ref)  # follows the build to its end
        finally:
            _, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
        assert logs.returncode == 0, logs.stderr
        text = logs.stdout.decode()
        assert re.search(r"^#\d+ \d+\.\d+ begin$", text, re.M), text
        assert re.search(r"^#\d+ \d+\.\d+ end$", text, re.M), text
        assert text == err.decode()
        assert [r["status"] for r in _history(address)] == ["completed"]


def test_systemds_own_socket_activation_starts_the_daemon_on_the_first_client(
    tmp_path: Path,
) -> None:
    """systemd-socket-activate (systemd's own implementation of the protocol, as a .socket unit
    uses it) binds two sockets, names them, and execs llbkitd when a client connects."""
    import shutil

    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian's systemd)")
    sock_path = tmp_path / "llbkitd.sock"
    proc = subprocess.Popen(
        [
            activate,
            "--listen",
            str(sock_path),
            "--listen",
            str(tmp_path / "other.sock"),
            "--fdname=llbkitd.socket:other",
            *LLBKITD,
            "--root",
            str(tmp_path / "root"),
            "--addr",
            "fd://llbkitd.socket",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock_path.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "nothing listens"
            time.sleep(0.05)
        workers = client(f"unix://{sock_path}", "debug", "workers")
        assert workers.returncode == 0, workers.stderr
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert f"serving {tmp_path / 'root'} on fd://3 (unix://{sock_path})" in log, log
    assert "other.sock" not in log.split("Execing", 1)[1], log  # fd 4 was not asked for


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _llbkitd_flags(args: list[str]) -> dict[str, Any]:
    """What llbkitd's command line makes of ``args`` (its own parser: an unknown flag fails)."""
    from llbkit.core.daemon.main import llbkitd

    with llbkitd.make_context("llbkitd", list(args)) as context:
        return dict(context.params)


def test_the_deployment_files_describe_the_daemon_they_start() -> None:
    yaml = pytest.importorskip("yaml")
    import configparser
    import shlex

    from llbkit.core.daemon.listen import default_address, parse_address

    # systemd: the service takes the socket's fds; the socket is the daemon's default address.
    units = {}
    for name in ("llbkitd.service", "llbkitd.socket"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(DEPLOY / "systemd" / name)
        units[name] = unit
    service, sock = units["llbkitd.service"], units["llbkitd.socket"]
    command = shlex.split(service["Service"]["ExecStart"])
    assert command[0] == "/usr/local/bin/llbkitd"
    addresses = [parse_address(a) for a in _llbkitd_flags(command[1:])["addresses"]]
    assert [a.scheme for a in addresses] == ["fd"]
    assert service["Service"]["Type"] == "notify"
    assert service["Service"]["KillMode"] == "mixed"
    assert service["Service"]["Delegate"] == "yes"
    assert "llbkitd.socket" in service["Unit"]["Requires"]
    assert f"unix://{sock['Socket']['ListenStream']}" == "unix:///run/llbkit/llbkitd.sock"
    assert sock["Socket"]["SocketMode"] == "0660"
    if os.geteuid() == 0:
        assert default_address() == f"unix://{sock['Socket']['ListenStream']}"
    # The image runs llbkitd with its state on a volume.
    dockerfile = (DEPLOY / "image" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["llbkitd"]' in dockerfile
    assert "VOLUME /var/lib/llbkit" in dockerfile
    # Kubernetes: the headless Service selects the StatefulSet's pods; its flags are llbkitd's.
    docs = {}
    for name in ("service.yaml", "statefulset.yaml"):
        for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()):
            docs[doc["kind"]] = doc
    svc, sts = docs["Service"], docs["StatefulSet"]
    pod = sts["spec"]["template"]
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["privileged"] is True
    flags = _llbkitd_flags(container["args"])
    addresses = [parse_address(a) for a in flags["addresses"]]
    tcp = next(a for a in addresses if a.scheme == "tcp")
    unix = next(a for a in addresses if a.scheme == "unix")
    port = next(p for p in container["ports"] if p["name"] == svc["spec"]["ports"][0]["targetPort"])
    assert tcp.target.endswith(f":{port['containerPort']}")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for flag, file in (("tlscert", "cert.pem"), ("tlskey", "key.pem"), ("tlscacert", "ca.pem")):
        assert flags[flag] == f"{mounts['certs']}/{file}"  # as create-certs.sh names them
    certs = next(v for v in pod["spec"]["volumes"] if v["name"] == "certs")
    assert certs["secret"]["secretName"] == "llbkitd-daemon-certs"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == [
            "llbkit",
            "--addr",
            unix.text,
            "debug",
            "workers",
        ]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == "/var/lib/llbkit"


def test_the_kubernetes_certificates_admit_their_client(tmp_path: Path) -> None:
    """create-certs.sh's daemon and client certificates work together, and nothing else does."""
    import base64
    import shutil

    yaml = pytest.importorskip("yaml")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = tmp_path / "certs"
    made = subprocess.run(
        ["bash", str(DEPLOY / "kubernetes" / "create-certs.sh"), "127.0.0.1", "localhost"],
        env={**os.environ, "CERTS_DIR": str(certs)},
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    secret = yaml.safe_load((certs / "llbkitd-daemon-certs.yaml").read_text())
    assert secret["metadata"]["name"] == "llbkitd-daemon-certs"
    for file, data in secret["data"].items():
        assert base64.b64decode(data) == (certs / "daemon" / file).read_bytes()
    daemon_certs = certs / "daemon"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            *LLBKITD,
            "--root",
            str(tmp_path / "root"),
            "--addr",
            address,
            "--tlscert",
            str(daemon_certs / "cert.pem"),
            "--tlskey",
            str(daemon_certs / "key.pem"),
            "--tlscacert",
            str(daemon_certs / "ca.pem"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "llbkitd did not start"
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.connect(("127.0.0.1", port))
                break
            time.sleep(0.05)
        good = client(address, "--tlsdir", str(certs / "client"), "debug", "workers")
        assert good.returncode == 0, good.stderr
        anonymous = client(address, "--tlscacert", str(certs / "ca.pem"), "debug", "workers")
        assert anonymous.returncode == 1
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_images_buildctl_carries_buildx_kubernetes_drivers_connection(
    served: str, tmp_path: Path
) -> None:
    """buildx's kubernetes driver runs ``buildctl dial-stdio`` in the pod through ``kubectl
    exec`` and speaks gRPC over its standard input and output; here a socket stands in for the
    exec stream, each connection a new ``dial-stdio``."""
    import threading

    shim = [sys.executable, str(DEPLOY / "image" / "buildctl")]
    env = {**os.environ, "BUILDKIT_HOST": served}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    bridge = tmp_path / "exec.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(bridge))
    listener.listen()
    procs: list[subprocess.Popen[bytes]] = []

    def exec_stream() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            proc = subprocess.Popen(
                [*shim, "dial-stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            procs.append(proc)

            def down(conn: socket.socket = conn, proc: subprocess.Popen[bytes] = proc) -> None:
                assert proc.stdout is not None
                with contextlib.suppress(OSError):  # the client went away first
                    while data := proc.stdout.read1(1 << 16):
                        conn.sendall(data)
                conn.close()

            def up(conn: socket.socket = conn, proc: subprocess.Popen[bytes] = proc) -> None:
                assert proc.stdin is not None
                with contextlib.suppress(OSError):
                    while data := conn.recv(1 << 16):
                        proc.stdin.write(data)
                        proc.stdin.flush()
                with contextlib.suppress(OSError):
                    proc.stdin.close()

            threading.Thread(target=down, daemon=True).start()
            threading.Thread(target=up, daemon=True).start()

    threading.Thread(target=exec_stream, daemon=True).start()
    try:
        workers = client(f"unix://{bridge}", "debug", "workers")
        assert workers.returncode == 0, workers.stderr
        built = client(f"unix://{bridge}", "build", "--output", "type=tar", stdin=_files())
        assert built.returncode == 0, built.stderr
        assert _members(built.stdout)["hello"] == b"hello\n"
        # The readiness probe buildx gives its pods: buildctl debug workers.
        probe = subprocess.run([*shim, "debug", "workers"], env=env, capture_output=True)
        assert probe.returncode == 0, probe.stderr
        assert "linux/amd64" in probe.stdout.decode()
        # Without an address it is the daemon's socket, never an in-process build.
        alone = {k: v for k, v in env.items() if k != "BUILDKIT_HOST"}
        alone["LLBKIT_ROOT"] = str(tmp_path / "embedded")
        subprocess.run([*shim, "debug", "workers"], env=alone, capture_output=True, timeout=120)
        assert not (tmp_path / "embedded").exists()
        nowhere = subprocess.run(
            [*shim, "--addr", f"unix://{tmp_path}/none.sock", "dial-stdio"], capture_output=True
        )
        assert nowhere.returncode == 1
        assert nowhere.stderr.decode().startswith("buildctl: error: cannot reach unix://")
    finally:
        listener.close()
        for proc in procs:
            proc.wait(30)


def test_pick_daemon_keeps_keys_on_their_daemon_as_daemons_come_and_go() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pick", DEPLOY / "kubernetes" / "pick-daemon.py")
    assert spec is not None and spec.loader is not None
    pick = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pick)
    daemons = [f"tcp://llbkitd-{n}.llbkitd.build.svc:1234" for n in range(5)]
    keys = [f"team/app-{n}" for n in range(500)]
    before = {key: pick.pick(key, daemons) for key in keys}
    assert len(set(before.values())) == 5  # every daemon gets work
    assert max(list(before.values()).count(d) for d in daemons) < 160  # and none most of it
    grown = {
        key: pick.pick(key, [*daemons, "tcp://llbkitd-5.llbkitd.build.svc:1234"]) for key in keys
    }
    moved = [key for key in keys if grown[key] != before[key]]
    assert all(grown[key].startswith("tcp://llbkitd-5.") for key in moved)  # only to the new one
    shrunk = {key: pick.pick(key, daemons[1:]) for key in keys}
    assert all(shrunk[k] == before[k] for k in keys if before[k] != daemons[0])
    listed = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "kubernetes" / "pick-daemon.py"),
            "--template",
            "tcp://{}.llbkitd.build.svc:1234",
            "team/app-7",
        ],
        input=b"".join(f"pod/llbkitd-{n}\n".encode() for n in range(5)),
        capture_output=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().strip() == before["team/app-7"]


def test_local_caches_and_oci_layouts_stay_on_the_clients_disk(tmp_path: Path) -> None:
    """``type=local`` caches and ``--oci-layout`` stores cross the session as BuildKit's content
    stores: daemon A exports to the client's directory, a fresh daemon B imports it all CACHED,
    and index.json names the manifest as the embedded export does."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\nCOPY b /b\n")
    (ctx / "a").write_text("a\n")
    (ctx / "b").write_text("b\n")
    build = ["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
    build += ["--local", f"dockerfile={ctx}", "--progress", "plain"]
    cache = tmp_path / "cache"
    with daemon(tmp_path / "a") as (address, _):
        done = client(address, *build, "--export-cache", f"type=local,dest={cache},tag=v1")
        assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "a").rglob(cache.name))  # nothing of it on the daemon's side
    index = json.loads((cache / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    assert (cache / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    manifest = json.loads((cache / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    for desc in [manifest["config"], *manifest["layers"]] if "config" in manifest else []:
        assert (cache / "blobs/sha256" / desc["digest"][7:]).stat().st_size == desc["size"]
    assert not [p for p in cache.rglob(".*") if p.is_file()]

    with daemon(tmp_path / "b") as (address, _):
        hit = client(address, *build, "--import-cache", f"type=local,src={cache},tag=v1")
        assert hit.returncode == 0, hit.stderr
        log = hit.stderr.decode()
        assert "[2/2] COPY b /b" in log and "CACHED" in log, log
        missing = client(address, *build, "--import-cache", f"type=local,src={tmp_path / 'no'}")
        assert missing.returncode == 0, missing.stderr
        assert b"warning: local cache import at" in missing.stderr


@pytest.mark.root
def test_an_oci_layout_base_is_read_from_the_client(served: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    layout = tmp_path / "layout"
    made = subprocess.run(
        [sys.executable, str(root / "examples/busybox_layout.py"), str(layout)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nRUN echo from-layout > /out\n")
    out = tmp_path / "out"
    done = client(
        served,
        *["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"],
        *["--local", f"dockerfile={ctx}", "--oci-layout", f"bb={layout}"],
        *["--opt", f"context:base=oci-layout://bb@{made.stdout.strip()}"],
        *["--output", f"type=local,dest={out}"],
    )
    assert done.returncode == 0, done.stderr
    assert (out / "out").read_text() == "from-layout\n"
    unshared = client(
        served,
        *["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"],
        *["--local", f"dockerfile={ctx}"],
        *["--opt", f"context:base=oci-layout://bb@{made.stdout.strip()}"],
    )
    assert unshared.returncode == 1
    assert b"--oci-layout bb=<path>" in unshared.stderr


def test_a_context_the_client_refuses_to_send_reads_as_buildkit_says_it(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """A malformed COPY wildcard: the client's sender refuses it; through the daemon the error
    is the embedded engine's, fsutil's words after ``error from sender: ``."""
    ctx = tmp_path / "ctx"
    args = _dockerfile_args(ctx, registry, dockerfile="ARG BASE\nFROM ${BASE}\nCOPY [a /d/\n")
    args += ["--progress", "quiet"]
    expected = "error from sender: invalid includepatterns: []: syntax error in pattern"
    with daemon(tmp_path / "root") as (address, _):
        remote = client(address, *args)
    embedded = subprocess.run(
        [*LLBKIT, "--root", str(tmp_path / "embedded"), *args], input=b"", capture_output=True
    )
    for done in (remote, embedded):
        assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr
    last = [done.stderr.decode().splitlines()[-1] for done in (remote, embedded)]
    assert last[0] == last[1] and last[0].endswith(expected), last


# A client as buildctl is one: its session carries no shared key.
_KEYLESS = """
import sys
import llbkit.core.remote.controller as remote
remote.shared_key = lambda locals_: ""
sys.argv = ["llbkit", "--addr", *sys.argv[1:]]
from llbkit.core.cli.main import run
run()
"""


def _keyless(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _KEYLESS, address, *args], capture_output=True, timeout=300
    )


def _keyless_start(address: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _KEYLESS, address, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _context_build(folder: Path) -> list[str]:
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (folder / "big.bin").write_bytes(os.urandom(1 << 20))
    return _context_build_args(folder)


def _context_build_args(folder: Path) -> list[str]:
    return [
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={folder}",
        "--local",
        f"dockerfile={folder}",
    ]


def _mirrors(root: Path) -> set[str]:
    return {p.name for p in (root / "plugins/llbkit.sources/local").iterdir()}


def test_clients_without_a_shared_key_resync_one_mirror_as_buildkit(tmp_path: Path) -> None:
    """buildctl's builds share a mirror per directory name on the socket, as buildkitd's do:
    a rebuild sends only what changed, and no build leaves a mirror of its own."""
    folder = tmp_path / "ctx"
    folder.mkdir()
    build = _context_build(folder)
    with daemon(tmp_path / "root") as (address, _):
        first = _keyless(address, *build)
        assert first.returncode == 0, first.stderr
        mirrors = _mirrors(tmp_path / "root")
        (copy,) = (tmp_path / "root/plugins/llbkit.sources/local").glob("*/tree/big.bin")
        before = copy.stat().st_ino
        again = _keyless(address, *build, "--no-cache")
        assert again.returncode == 0, again.stderr
        assert _mirrors(tmp_path / "root") == mirrors  # the same ones, synced again
        assert copy.stat().st_ino == before  # unchanged, so not sent again


def test_mutual_tls_clients_never_share_a_mirror(tmp_path: Path) -> None:
    """Over mutual TLS a client's mirrors are its certificate's: another client that sends
    the same (or no) shared key never syncs into them, nor builds from them."""
    pytest.importorskip("trustme")
    folder = tmp_path / "ctx"
    folder.mkdir()
    build = _context_build(folder)
    with tls_daemon(tmp_path, {"alice": None, "bob": None}) as address:
        seen: list[set[str]] = []
        for name in ("alice", "alice", "bob"):
            done = _keyless(address, "--tlsdir", str(tmp_path / name), *build)
            assert done.returncode == 0, done.stderr
            seen.append(_mirrors(tmp_path / "root"))
    assert seen[0] == seen[1]  # alice again: her mirrors, resynced
    assert len(seen[2]) == 2 * len(seen[0])  # bob: mirrors of his own


def test_keyless_builds_at_once_each_build_their_own_files(tmp_path: Path) -> None:
    """Two of buildctl's builds at once, of different folders both named ``context``: they
    share an identity, so the second takes a spare mirror instead of resyncing the first's
    under it (BuildKit takes another mutable ref), and each image holds its own files."""
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for n in range(300):
            (folder / f"{name}{n}.bin").write_bytes(os.urandom(4096))
        folders.append(folder)
    with daemon(tmp_path / "root") as (address, _):
        for round_ in range(3):
            runs = []
            for folder in folders:
                (folder / "Dockerfile").write_text(f"FROM scratch\nCOPY . /{round_}/\n")
                out = tmp_path / f"out-{folder.name}-{round_}"
                argv = [
                    *_context_build_args(folder),
                    "--output",
                    f"type=local,dest={out}",
                ]
                runs.append((folder, out, _keyless_start(address, *argv)))
            for folder, out, proc in runs:
                _, stderr = proc.communicate(timeout=300)
                assert proc.returncode == 0, stderr.decode()
                assert sorted(p.name for p in (out / str(round_)).iterdir()) == sorted(
                    p.name for p in folder.iterdir()
                )


# The light client's start: which heavy modules a build through the daemon imported.
_WATCHED_RUN = """
import atexit, json, sys
heavy = ("grpc", "asyncio", "click", "google.protobuf", "anyio", "typing", "dataclasses", "hashlib",
         "tempfile", "pathlib", "socket", "importlib")
atexit.register(lambda: print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr))
sys.argv = ["llbkit", *sys.argv[1:]]
from llbkit.core.cli.entry import run
run()
"""
# The same command line through the full client (grpcio), for comparison.
_FULL_RUN = """
import sys
sys.argv = ["llbkit", *sys.argv[1:]]
from llbkit.core.cli.main import run
run()
"""


def _light_and_full(address: str, *args: str) -> tuple[Any, Any]:
    light = subprocess.run(
        [sys.executable, "-c", _WATCHED_RUN, "--addr", address, *args],
        capture_output=True,
        timeout=120,  # a hang is a failure
    )
    full = subprocess.run(
        [sys.executable, "-c", _FULL_RUN, "--addr", address, *args],
        capture_output=True,
        timeout=120,
    )
    return light, full


def test_a_build_through_the_daemon_needs_no_grpcio_and_says_what_the_full_client_says(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``--addr unix://… build`` with a frontend, ``--local``, ``--opt`` and quiet or plain
    progress runs without grpcio, asyncio or click: the context crosses the session (and a
    changed file crosses again), a step's output shows, credentials are asked of it, and a
    failure prints exactly what the full client prints."""
    ctx = tmp_path / "ctx"
    dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY a.txt /a.txt\nRUN cat /a.txt\n"
    args = _dockerfile_args(ctx, registry, dockerfile=dockerfile)
    (ctx / "a.txt").write_text("first-content\n")
    with daemon(tmp_path / "root") as (address, _):
        light, _full = _light_and_full(address, *args, "--progress", "plain")
        assert light.returncode == 0, light.stderr
        said = light.stderr.decode()
        imported = json.loads(said.rstrip().splitlines()[-1])
        # A plain display needs dataclasses (and what they import); a quiet build not even
        # those (tested below).
        shown = {"typing", "dataclasses", "pathlib", "tempfile", "importlib"}
        assert "first-content" in said and set(imported) <= shown, said
        (ctx / "a.txt").write_text("second-content\n")
        again = subprocess.run(
            [sys.executable, "-c", _WATCHED_RUN, "--addr", address, *args, "--progress=plain"],
            capture_output=True,
        )
        assert again.returncode == 0 and b"second-content" in again.stderr, again.stderr
        # A failing step: the same lines, in the same order, from both clients.
        (ctx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN echo out-put && exit 3\n")
        light, full = _light_and_full(address, *args, "--progress", "quiet")
    assert light.returncode == full.returncode == 1, (light.stderr, full.stderr)
    shown = light.stderr.decode().splitlines()
    assert shown[:-1] == full.stderr.decode().splitlines(), (light.stderr, full.stderr)
    assert any("out-put" in line for line in shown) and "exit code: 3" in shown[-2], shown


def test_the_light_client_writes_the_trace_the_full_client_writes(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``--trace FILE`` with quiet progress stays on the light client (no grpcio), and the file
    holds buildctl's records as the full client writes them: the same vertexes, each completed,
    in Go's field names."""
    ctx = tmp_path / "ctx"
    args = _dockerfile_args(ctx, registry, dockerfile="ARG BASE\nFROM ${BASE}\nRUN echo x\n")
    traced: dict[str, list[dict[str, Any]]] = {}
    with daemon(tmp_path / "root") as (address, _):
        for who, script in (("light", _WATCHED_RUN), ("full", _FULL_RUN)):
            trace = tmp_path / f"{who}.json"
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    script,
                    "--addr",
                    address,
                    *args,
                    "--progress=quiet",
                    "--no-cache",
                    "--trace",
                    str(trace),
                ],
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            if who == "light":  # the records' decoding needs dataclasses, as a display does
                imported = json.loads(done.stderr.decode().splitlines()[-1])
                assert set(imported) <= {"typing", "dataclasses", "importlib"}, done.stderr
            assert oct(trace.stat().st_mode & 0o777) == "0o600"
            traced[who] = [json.loads(line) for line in trace.read_text().splitlines()]
        unwritable = subprocess.run(
            [
                sys.executable,
                "-c",
                _WATCHED_RUN,
                "--addr",
                address,
                *args,
                "--progress=quiet",
                "--trace",
                str(tmp_path / "no" / "t.json"),
            ],
            capture_output=True,
            timeout=120,
        )
    assert unwritable.returncode == 1
    assert unwritable.stderr.decode().splitlines()[0].startswith("error: --trace "), unwritable

    def completed(records: list[dict[str, Any]]) -> list[str]:
        assert all(list(r) == ["Vertexes", "Statuses", "Logs", "Warnings"] for r in records)
        done = {v["Name"] for r in records for v in r["Vertexes"] or [] if v["Completed"]}
        return sorted(done)

    assert completed(traced["light"]) == completed(traced["full"])
    assert any(name.endswith("RUN echo x") for name in completed(traced["light"]))


def test_a_context_the_light_client_cannot_send_fails_as_with_the_full_client(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """An entry the sender cannot describe (an extended attribute whose name is not UTF-8)
    ends the build with the full client's words, not a hang."""
    ctx = tmp_path / "ctx"
    args = _dockerfile_args(ctx, registry, dockerfile="ARG BASE\nFROM ${BASE}\nCOPY . /c/\n")
    (ctx / "odd").write_text("x\n")
    try:
        os.setxattr(ctx / "odd", b"user.\xff\xfe", b"v")
    except OSError:
        pytest.skip("this filesystem keeps no user extended attributes")
    with daemon(tmp_path / "root") as (address, _):
        light, full = _light_and_full(address, *args, "--progress", "quiet")
    assert light.returncode == full.returncode == 1, (light.stderr, full.stderr)
    assert light.stderr.decode().splitlines()[:-1] == full.stderr.decode().splitlines()
    assert "error from sender: " in full.stderr.decode()


#: the light client whose session reader fails (a defect standing for any the reader might
#: meet: it must end the build, not leave both ends waiting): at the daemon's third message
#: (``LOSE=early``: the files are asked for), or at the first once an output arrives
_BROKEN_SESSION_RUN = """
import os, sys
from llbkit.core.remote.lite import messages, session
real, seen, receiving = messages.bytes_message_data, [], []
def failing(data):
    seen.append(data)
    if len(seen) == 3 if os.environ["LOSE"] == "early" else receiving:
        raise RuntimeError("injected")
    return real(data)
messages.bytes_message_data = failing
receive = session._receive_tree
session._receive_tree = lambda *a, **k: receiving.append(1) or receive(*a, **k)
sys.argv = ["llbkit", *sys.argv[1:]]
from llbkit.core.cli.entry import run
run()
"""


@pytest.mark.parametrize("lose", ["early", "exporting"])
def test_a_session_the_light_client_loses_ends_the_build_with_why(
    tmp_path: Path, lose: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /c/\n")
    for n in range(50):
        (ctx / f"f{n}").write_bytes(os.urandom(20_000))
    args = ["build", "--progress", "plain", "--frontend", "dockerfile.v0"]
    args += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    args += ["--output", f"type=local,dest={tmp_path / 'out'}"]
    with daemon(tmp_path / "root") as (address, proc):
        lost = subprocess.run(
            [sys.executable, "-c", _BROKEN_SESSION_RUN, "--addr", address, *args],
            capture_output=True,
            timeout=120,  # a hang is the failure this test is for
            env={**os.environ, "LOSE": lose},
        )
        again = client(address, *args)  # the daemon serves the next build as ever
    assert lost.returncode == 1, lost.stderr
    last = lost.stderr.decode().splitlines()[-1]
    assert last.startswith("error: the build's session with the daemon ended: "), last
    assert "RuntimeError: injected" in last
    # What the daemon says names the step that lost it, in its own words.
    step = "exporting to client directory" if lose == "exporting" else "local directory"
    assert step in last and "Unexpected" not in last, last
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "out" / "c").iterdir())) == 51
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_the_light_client_pushes_exports_caches_and_writes_metadata_as_the_full_one(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``--output type=image,push=true``, ``--export-cache``/``--import-cache`` (daemon-side
    types), ``--no-cache`` and ``--metadata-file`` through the light client: the same image
    (digest) and the same metadata as the full client's."""
    ctx = tmp_path / "ctx"
    args = _dockerfile_args(ctx, registry, dockerfile="ARG BASE\nFROM ${BASE}\nRUN echo x > /x\n")
    args += ["--opt", "build-arg:SOURCE_DATE_EPOCH=0", "--progress", "quiet", "--no-cache"]
    made = {}
    with daemon(tmp_path / "root") as (address, _):
        for who, script in (("light", _WATCHED_RUN), ("full", _FULL_RUN)):
            out = [
                "--output",
                f"type=image,name={registry}/light/{who}:1,push=true,rewrite-timestamp=true",
                "--export-cache",
                f"type=registry,ref={registry}/light/cache-{who}:1",
                "--import-cache",
                f"type=registry,ref={registry}/light/cache-{who}:1",
                "--metadata-file",
                str(tmp_path / f"{who}.json"),
            ]
            done = subprocess.run(
                [sys.executable, "-c", script, "--addr", address, *args, *out],
                capture_output=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            made[who] = json.loads((tmp_path / f"{who}.json").read_text())
            if who == "light":
                assert done.stderr.decode().splitlines()[-1] == "[]", done.stderr
    light, full = made["light"], made["full"]
    assert light["containerimage.digest"] == full["containerimage.digest"]
    assert sorted(light) == sorted(full) and "cache.manifest" in light


def test_the_light_client_serves_secrets_and_receives_archives_as_the_full_one(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``--secret`` and ``--output type=oci,dest=FILE`` / ``type=tar`` (standard output)
    through the light client: the same archive as the full client's, the secret read by the
    step; without the secret the step fails as it does through the full client."""
    ctx = tmp_path / "ctx"
    dockerfile = (
        "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /size\n"
    )
    args = [*_dockerfile_args(ctx, registry, dockerfile=dockerfile), "--progress", "quiet"]
    args += ["--opt", "build-arg:SOURCE_DATE_EPOCH=0"]  # one archive, whenever it is made
    (tmp_path / "tok").write_text("twelve chars")
    secret = ["--secret", f"id=tok,src={tmp_path / 'tok'}"]

    def run(script: str, *more: str) -> subprocess.CompletedProcess[bytes]:
        line = [sys.executable, "-c", script, "--addr", address, *args, *more]
        return subprocess.run(line, capture_output=True, timeout=120)

    with daemon(tmp_path / "root") as (address, _):
        light = run(_WATCHED_RUN, *secret, "--output", f"type=oci,dest={tmp_path / 'l.tar'}")
        full = run(_FULL_RUN, *secret, "--output", f"type=oci,dest={tmp_path / 'f.tar'}")
        streamed = run(_WATCHED_RUN, *secret, "--output", "type=tar")
        # Without the secret (an optional mount, as BuildKit's): the step fails alike.
        missing = run(_WATCHED_RUN, "--no-cache")
        missing_full = run(_FULL_RUN, "--no-cache")
    assert light.returncode == full.returncode == 0, (light.stderr, full.stderr)
    # Writing an archive here takes tempfile; nothing heavier.
    assert light.stderr.decode().splitlines()[-1] == '["tempfile"]', light.stderr
    assert (tmp_path / "l.tar").read_bytes() == (tmp_path / "f.tar").read_bytes()
    assert streamed.returncode == 0, streamed.stderr
    assert _members(streamed.stdout)["size"].strip() == b"12"
    assert missing.returncode == missing_full.returncode == 1, missing.stderr
    said = missing.stderr.decode().splitlines()[:-1]
    assert said == missing_full.stderr.decode().splitlines() and "exit code: 1" in said[-1]


def test_the_light_client_receives_directories_as_the_full_one(
    registry: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """``type=local`` and an ``oci`` layout with ``tar=false`` through the light client: the
    same trees (files, a link, modes) as the full client's, owned by whoever ran the client."""
    ctx = tmp_path / "ctx"
    dockerfile = (
        "ARG BASE\nFROM ${BASE} AS b\n"
        "RUN mkdir -p /o/sub && echo hi > /o/sub/f && chmod 600 /o/sub/f && ln -s sub/f /o/l\n"
        "FROM scratch\nCOPY --from=b /o /\n"
    )
    args = [*_dockerfile_args(ctx, registry, dockerfile=dockerfile), "--progress", "quiet"]
    args += ["--opt", "build-arg:SOURCE_DATE_EPOCH=0"]
    made = {}
    with daemon(tmp_path / "root") as (address, _):
        for who, script in (("light", _WATCHED_RUN), ("full", _FULL_RUN)):
            out = tmp_path / who
            line = [sys.executable, "-c", script, "--addr", address, *args]
            line += ["--output", f"type=local,dest={out / 'local'}"]
            line += ["--output", f"type=oci,tar=false,dest={out / 'layout'}"]
            done = subprocess.run(line, capture_output=True, timeout=120)
            assert done.returncode == 0, done.stderr
            made[who] = {
                str(p.relative_to(out)): (
                    p.lstat().st_mode,
                    os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b"",
                )
                for p in sorted(out.rglob("*"))
            }
    assert made["light"] == made["full"]
    assert made["light"]["local/sub/f"] == (0o100600, b"hi\n")
    assert made["light"]["local/l"][1] == "sub/f"
    assert "layout/index.json" in made["light"]
