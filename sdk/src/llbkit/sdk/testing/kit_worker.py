"""The conformance kit of the worker contract (v2), which every worker runs against itself.

Subclass :class:`WorkerKit` in a ``Test...`` class and set ``worker_class`` and
``valid_config``; set ``rootfs`` to also run processes, which is what most checks do. What they
hold a worker to is what the engine relies on, and what gateway containers and a ``debug shell``
(to come) will: a worker that gives processes no terminal, standard input or ``exec`` (the
engine's builds need none of them) sets ``interactive = False``, and those checks skip, saying
so.

    class TestRuncWorker(WorkerKit):
        worker_class = RuncWorker

        @pytest.fixture(scope="class", autouse=True)
        @classmethod
        def _rootfs(cls, tmp_path_factory):
            cls.rootfs = busybox_rootfs(tmp_path_factory.mktemp("rootfs"))

The process checks need a rootfs with busybox's ``sh``, ``cat``, ``id``, ``tty``, ``stty`` and
``sleep`` (:func:`busybox_rootfs` makes one), and the worker may need root to run them.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.plugins import worker
from llbkit.core.plugins.context import DNSConfig
from llbkit.core.plugins.stdio import ProcessIO, WindowSize
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.sdk.testing._doubles import RecordingProgress, make_context
from llbkit.sdk.testing._kit_helpers import BOGUS_KEY, assert_names_key, check_api_version

__all__ = ["WorkerKit", "busybox_rootfs"]

T = TypeVar("T")


def busybox_rootfs(dest: Path) -> Path:
    """Make ``dest`` a rootfs of the host's static busybox with every applet linked, and users
    ``root`` and ``builder`` (1000) in ``/etc/passwd``; the rootfs the kit's checks expect."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise FileNotFoundError("busybox is not installed (apt-get install busybox-static)")
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True)
    for sub in ("bin", "etc", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)  # any user the checks run as can reach the tools (temp dirs are 0700)
    (dest / "tmp").chmod(0o1777)
    shutil.copy(busybox, dest / "bin" / "busybox")
    for applet in applets.stdout.split():
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nbuilder:x:1000:\nextra:x:2000:builder\n")
    return dest


class _Collected:
    """A byte sender that keeps what it is sent."""

    def __init__(self) -> None:
        self.data = b""

    async def send(self, item: bytes) -> None:
        self.data += item


class _Fixed:
    """A byte receiver that gives ``chunks``, then ends."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    async def receive(self) -> bytes:
        if not self._chunks:
            raise anyio.EndOfStream
        return self._chunks.pop(0)


class WorkerKit:
    """Checks for a worker. Set ``worker_class`` and ``valid_config``; set ``rootfs`` (a
    directory like :func:`busybox_rootfs` makes) to also run processes, and override
    :meth:`leftover_containers` so that cancellation is checked to leave nothing behind."""

    worker_class: ClassVar[type]
    valid_config: ClassVar[Mapping[str, object]] = {}
    rootfs: ClassVar[Path | None] = None
    #: seconds any one check may take before it fails instead of hanging
    timeout: ClassVar[float] = 30.0
    #: whether the worker gives processes a terminal, standard input and ``exec``
    interactive: ClassVar[bool] = True

    def leftover_containers(self, executor: Any) -> Sequence[str] | None:
        """The containers ``executor``'s runtime still holds (``runc list``); ``None`` when the
        worker cannot tell."""
        return None

    def _run(
        self,
        tmp_path: Path,
        body: Callable[[Any, Path], Awaitable[T]],
        *,
        interactive: bool = False,
        dns: DNSConfig | None = None,
    ) -> T:
        """Resolve an executor and await ``body(executor, rootfs)`` within the timeout."""
        if self.rootfs is None:
            pytest.skip("no rootfs given to the kit: it runs no processes")
        if interactive and not self.interactive:
            pytest.skip("the worker declares no terminal, standard input or exec")
        rootfs = self.rootfs
        driver = self.worker_class(make_context("kit", state_dir=tmp_path, dns=dns))

        async def main() -> T:
            executor = await driver.resolve(dict(self.valid_config))
            try:
                with anyio.fail_after(self.timeout):
                    return await body(executor, rootfs)
            finally:
                await executor.aclose()

        return anyio.run(main)

    def test_declares_contract_version(self) -> None:
        check_api_version(self.worker_class, worker.API_VERSION)

    def test_rejects_unknown_config_key_by_name(self, tmp_path: Path) -> None:
        driver = self.worker_class(make_context("kit", state_dir=tmp_path))
        with pytest.raises(UnknownOptionError) as err:
            anyio.run(driver.resolve, {**self.valid_config, BOGUS_KEY: "1"})
        assert_names_key(err)

    def test_runs_a_process_and_reports_its_exit_code(self, tmp_path: Path) -> None:
        progress = RecordingProgress()
        calls: list[int] = []

        async def body(executor: Any, rootfs: Path) -> int:
            spec = ProcessSpec(args=["/bin/sh", "-c", "echo kit-out; exit 3"])
            code: int = await executor.run(
                "kit-exit", spec, rootfs, [], progress, started=lambda: calls.append(1)
            )
            return code

        assert self._run(tmp_path, body) == 3
        assert b"kit-out" in b"".join(data for _, data in progress.logs)
        assert calls == [1], "started must be called once, before run returns"

    def test_output_goes_to_the_given_streams(self, tmp_path: Path) -> None:
        progress = RecordingProgress()
        out, err = _Collected(), _Collected()

        async def body(executor: Any, rootfs: Path) -> int:
            spec = ProcessSpec(args=["sh", "-c", "echo to-out; echo to-err >&2"])
            io = ProcessIO(stdout=out, stderr=err)
            code: int = await executor.run("kit-streams", spec, rootfs, [], progress, io=io)
            return code

        assert self._run(tmp_path, body) == 0
        assert (out.data, err.data) == (b"to-out\n", b"to-err\n")
        assert progress.logs == [], "output given to io must not also reach the log"

    def test_stdin_is_piped_through(self, tmp_path: Path) -> None:
        out = _Collected()

        async def body(executor: Any, rootfs: Path) -> tuple[int, int]:
            io = ProcessIO(stdin=_Fixed(b"hello\n", b"world\n"), stdout=out)
            piped = await executor.run("kit-in", ProcessSpec(["cat"]), rootfs, [], _log(), io=io)
            # Without stdin the input is empty, so cat ends at once.
            empty = await executor.run("kit-no-in", ProcessSpec(["cat"]), rootfs, [], _log())
            return piped, empty

        assert self._run(tmp_path, body, interactive=True) == (0, 0)
        assert out.data == b"hello\nworld\n"

    def test_resolv_conf_says_what_the_engines_dns_says(self, tmp_path: Path) -> None:
        """``PluginContext.dns`` (the engine's ``[dns]``) is what a step's
        ``/etc/resolv.conf`` says, written as BuildKit writes it."""
        out = _Collected()
        spec = ProcessSpec(["cat", "/etc/resolv.conf"])

        async def body(executor: Any, rootfs: Path) -> int:
            io = ProcessIO(stdout=out)
            code: int = await executor.run("kit-dns", spec, rootfs, [], _log(), io=io)
            return code

        dns = DNSConfig(("192.0.2.53",), ("ndots:3",), ("kit.test",))
        assert self._run(tmp_path, body, dns=dns) == 0
        assert out.data == b"search kit.test\nnameserver 192.0.2.53\noptions ndots:3\n"
        # A [dns] that names only options: nameservers and search domains are the host's
        from llbkit.sdk.ocispec import resolv_conf

        out.data = b""
        partial = DNSConfig((), ("ndots:3",), ())
        assert self._run(tmp_path / "partial", body, dns=partial) == 0
        assert out.data == resolv_conf(spec.network, dns=partial).encode()
        assert b"nameserver " in out.data

    def test_runs_as_the_given_ids(self, tmp_path: Path) -> None:
        out = _Collected()
        spec = ProcessSpec(
            ["sh", "-c", "id -u; id -g; id -G"], uid=1000, gid=1000, additional_gids=(1000, 2000)
        )

        async def body(executor: Any, rootfs: Path) -> int:
            io = ProcessIO(stdout=out)
            code: int = await executor.run("kit-ids", spec, rootfs, [], _log(), io=io)
            return code

        assert self._run(tmp_path, body) == 0
        assert out.data == b"1000\n1000\n1000 2000\n"

    def test_mounts_hostname_hosts_and_cwd_are_as_the_engine_gives_them(
        self, tmp_path: Path
    ) -> None:
        """What a step sees whichever worker runs it: read-only and writable binds (a write
        lands in the source), a tmpfs, the hostname and ``/etc/hosts`` with its extra hosts,
        the working directory."""
        data, out_dir = tmp_path / "data", tmp_path / "out"
        for folder in (data, out_dir):
            folder.mkdir()
            folder.chmod(0o777)
        (data / "in").write_text("from a mount\n")
        mounts = [
            MountSpec("/data", source=data, readonly=True),
            MountSpec("/out", source=out_dir),
            MountSpec("/scratch", "tmpfs"),
        ]
        script = (
            "cat /data/in; hostname; grep -c 'localhost kit-host' /etc/hosts; "
            "grep -c 'kit-extra' /etc/hosts; pwd; grep -c ' /scratch tmpfs ' /proc/mounts; "
            "echo written > /out/new; touch /data/x 2>/dev/null && echo wrote-read-only; true"
        )
        spec = ProcessSpec(
            ["sh", "-c", script],
            uid=1000,
            gid=1000,
            cwd="/tmp",
            hostname="kit-host",
            extra_hosts=[("kit-extra", "10.1.2.3")],
        )
        out = _Collected()

        async def body(executor: Any, rootfs: Path) -> int:
            io = ProcessIO(stdout=out)
            code: int = await executor.run("kit-mounts", spec, rootfs, mounts, _log(), io=io)
            return code

        assert self._run(tmp_path, body) == 0
        lines = out.data.decode().splitlines()
        assert lines == ["from a mount", "kit-host", "1", "1", "/tmp", "1"], out.data
        assert (out_dir / "new").read_text() == "written\n"
        assert not (data / "x").exists()

    def test_an_id_runs_once_at_a_time(self, tmp_path: Path) -> None:
        async def body(executor: Any, rootfs: Path) -> str:
            running = anyio.Event()
            run = functools.partial(executor.run, started=running.set)
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "kit-once", ProcessSpec(["sleep", "60"]), rootfs, [], _log())
                await running.wait()
                try:
                    await executor.run("kit-once", ProcessSpec(["true"]), rootfs, [], _log())
                except UserError as err:
                    return str(err)
                finally:
                    tg.cancel_scope.cancel()
            return "the second run of a running id was not refused"

        assert "kit-once is already running" in self._run(tmp_path, body)

    def test_exec_output_without_streams_goes_to_the_steps_log(self, tmp_path: Path) -> None:
        """An exec started before its container is up waits for it; without ``io.stdout``
        its output goes to the log of the container's step."""
        progress = RecordingProgress()

        async def body(executor: Any, rootfs: Path) -> int:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    executor.run, "kit-log", ProcessSpec(["sleep", "60"]), rootfs, [], progress
                )
                await anyio.sleep(0)  # the run has begun; its container may not be up yet
                echo = ProcessSpec(["echo", "in-log"])
                code: int = await executor.exec("kit-log", echo, ProcessIO())
                tg.cancel_scope.cancel()
            return code

        assert self._run(tmp_path, body, interactive=True) == 0
        assert progress.logs == [(1, b"in-log\n")]

    def test_tty_gives_the_process_a_terminal(self, tmp_path: Path) -> None:
        out = _Collected()
        spec = ProcessSpec(["sh", "-c", "test -t 0 && test -t 1 && tty"], tty=True)

        async def body(executor: Any, rootfs: Path) -> int:
            io = ProcessIO(stdout=out)
            code: int = await executor.run("kit-tty", spec, rootfs, [], _log(), io=io)
            return code

        assert self._run(tmp_path, body, interactive=True) == 0, out.data
        assert b"/dev/pts/" in out.data

    def test_tty_input_reaches_the_process_and_ends(self, tmp_path: Path) -> None:
        out = _Collected()
        spec = ProcessSpec(["sh", "-c", 'read line; echo "got:$line"; cat'], tty=True)

        async def body(executor: Any, rootfs: Path) -> int:
            # cat must end once the input has: a terminal's input ends with its EOF character.
            io = ProcessIO(stdin=_Fixed(b"typed\n"), stdout=out)
            code: int = await executor.run("kit-tty-in", spec, rootfs, [], _log(), io=io)
            return code

        assert self._run(tmp_path, body, interactive=True) == 0, out.data
        assert b"got:typed" in out.data

    def test_resize_reaches_the_process(self, tmp_path: Path) -> None:
        out = _Collected()
        wait = (
            'i=0; while [ "$(stty size)" != "33 101" ] && [ $i -lt 100 ]; '
            "do sleep 0.05; i=$((i+1)); done; stty size"
        )
        spec = ProcessSpec(["sh", "-c", wait], tty=True)

        async def body(executor: Any, rootfs: Path) -> int:
            sizes, resize = anyio.create_memory_object_stream[WindowSize](1)
            async with sizes, resize:
                io = ProcessIO(stdout=out, resize=resize)
                code: int = await executor.run(
                    "kit-resize",
                    spec,
                    rootfs,
                    [],
                    _log(),
                    io=io,
                    started=lambda: sizes.send_nowait(WindowSize(rows=33, cols=101)),
                )
            return code

        assert self._run(tmp_path, body, interactive=True) == 0, out.data
        assert out.data.strip().endswith(b"33 101"), out.data

    def test_exec_runs_a_second_process_in_a_running_container(self, tmp_path: Path) -> None:
        out = _Collected()
        spec = ProcessSpec(
            ["sh", "-c", "echo second $GREETING; pwd; id -u; id -g; id -G"],
            env=["GREETING=hi"],
            cwd="/tmp",
            uid=1000,
            gid=1000,
            additional_gids=(1000, 2000),
        )

        async def body(executor: Any, rootfs: Path) -> tuple[int, int, bytes]:
            async def second() -> int:
                code: int = await executor.exec("kit-exec", spec, ProcessIO(stdout=out))
                return code

            return await _while_running(executor, "kit-exec", rootfs, second)

        first, second, first_out = self._run(tmp_path, body, interactive=True)
        assert (first, second) == (0, 0)
        assert first_out == b"first-done\n"
        assert out.data == b"second hi\n/tmp\n1000\n1000\n1000 2000\n"

    def test_exec_with_a_tty(self, tmp_path: Path) -> None:
        out = _Collected()

        async def body(executor: Any, rootfs: Path) -> tuple[int, int, bytes]:
            async def second() -> int:
                spec = ProcessSpec(["sh", "-c", "test -t 0 && tty"], tty=True)
                code: int = await executor.exec("kit-exec-tty", spec, ProcessIO(stdout=out))
                return code

            return await _while_running(executor, "kit-exec-tty", rootfs, second)

        first, second, _ = self._run(tmp_path, body, interactive=True)
        assert (first, second) == (0, 0), out.data
        assert b"/dev/pts/" in out.data

    def test_cancelling_exec_kills_only_that_process(self, tmp_path: Path) -> None:
        out = _Collected()
        list_processes = "for p in /proc/[0-9]*; do cat $p/comm; done"

        async def body(executor: Any, rootfs: Path) -> tuple[int, float]:
            async def inside() -> float:
                begun = anyio.current_time()
                with anyio.move_on_after(1):
                    await executor.exec(
                        "kit-exec-cancel", ProcessSpec(["sleep", "60"]), ProcessIO()
                    )
                took = anyio.current_time() - begun
                spec = ProcessSpec(["sh", "-c", list_processes])
                await executor.exec("kit-exec-cancel", spec, ProcessIO(stdout=out))
                return took

            first, took, _ = await _while_running(executor, "kit-exec-cancel", rootfs, inside)
            return first, took

        first, took = self._run(tmp_path, body, interactive=True)
        assert first == 0, "the container's first process must outlive a cancelled exec"
        assert took < 10, f"a cancelled exec took {took:.1f} s to return"
        assert b"sleep" not in out.data.split(), f"the cancelled process still runs: {out.data!r}"

    def test_exec_on_an_unknown_id_is_a_user_error(self, tmp_path: Path) -> None:
        async def body(executor: Any, rootfs: Path) -> None:
            await executor.exec("kit-no-such-container", ProcessSpec(["true"]), ProcessIO())

        with pytest.raises(UserError) as err:
            self._run(tmp_path, body)
        assert "kit-no-such-container" in str(err.value)
        assert "\n" not in str(err.value), "a user error must be one line"

    def test_cancelling_run_leaves_no_container(self, tmp_path: Path) -> None:
        async def body(executor: Any, rootfs: Path) -> tuple[float, Sequence[str] | None]:
            running = anyio.Event()
            spec = ProcessSpec(["sleep", "60"])
            run = functools.partial(executor.run, started=running.set)
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "kit-cancel", spec, rootfs, [], _log())
                await running.wait()
                begun = anyio.current_time()
                tg.cancel_scope.cancel()
            return anyio.current_time() - begun, self.leftover_containers(executor)

        took, leftovers = self._run(tmp_path, body)
        assert took < 10, f"a cancelled run took {took:.1f} s to return"
        if leftovers is None:
            pytest.skip("leftovers not checked: override leftover_containers to list them")
        assert not leftovers, f"containers left behind: {leftovers}"


def _log() -> RecordingProgress:
    return RecordingProgress()


async def _while_running(
    executor: Any, id: str, rootfs: Path, inside: Callable[[], Awaitable[T]]
) -> tuple[int, T, bytes]:
    """Run ``id`` with a first process that waits for its input, await ``inside()`` once it
    runs, then end the input; return the first's exit code, ``inside``'s result and the
    first's output."""
    send, receive = anyio.create_memory_object_stream[bytes](1)
    running = anyio.Event()
    out = _Collected()
    codes: list[int] = []
    spec = ProcessSpec(["sh", "-c", "read x; echo first-done"])

    async def first() -> None:
        io = ProcessIO(stdin=receive, stdout=out)
        codes.append(await executor.run(id, spec, rootfs, [], _log(), io=io, started=running.set))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await running.wait()
        try:
            result = await inside()
        finally:
            await send.aclose()
    return codes[0], result, out.data
