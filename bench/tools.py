"""The builders compared: llbkit, and whichever peers this machine has.

Each tool runs in its own private state (a root, a socket, a data directory) under the run's
work folder, so the host's daemons and images are never touched, and ``reset`` empties that
state so the next build is cold (the base image is pulled again from the loopback registry).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory import CLIENTS

LLBKIT = str(Path(sys.executable).with_name("llbkit"))
HERE = Path(__file__).resolve().parent
#: As installed for users: compiled bytecode is cached, not rebuilt on every start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
TIMEOUT = 900


class Unsupported(Exception):
    """This tool cannot do this scenario (e.g. docker build takes no LLB)."""


@dataclass(frozen=True)
class Build:
    """One Dockerfile build: its context, build args, target and optional oci output; the
    ``--export-cache``/``--import-cache`` values and ``--trace`` file, when given."""

    context: Path
    args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    oci: Path | None = None
    compression: str = "gzip"
    export_cache: str = ""
    import_cache: str = ""
    trace: Path | None = None


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the harness's moto server (its bucket is ``bench``)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def run(
    command: list[str], *, data: bytes | None = None, env: dict[str, str] | None = None
) -> None:
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or ENV,
    ) as proc:
        CLIENTS.add(proc.pid)  # its memory counts while a phase is timed
        try:
            out, err = proc.communicate(data, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            # A failure of this phase, as an exit status is, not of the whole scenario.
            raise RuntimeError(f"{Path(command[0]).name} took over {TIMEOUT}s") from None
        finally:
            CLIENTS.discard(proc.pid)
    if proc.returncode != 0:
        # The last lines, each cut short: a vertex's name can list thousands of inputs.
        lines = (err or out).decode(errors="replace").strip().splitlines()[-3:]
        tail = " | ".join(line if len(line) <= 120 else line[:117] + "..." for line in lines)
        raise RuntimeError(f"{Path(command[0]).name} exited {proc.returncode}: {tail}")


def _wait_for(check: list[str], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run(check, capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


class Tool:
    name = ""
    #: builds LLB definitions, not only Dockerfiles
    takes_llb = False
    #: writes oci tarballs
    writes_oci = True
    #: takes ``--export-cache`` and ``--import-cache`` (BuildKit's cache format)
    moves_cache = False
    #: the daemon this tool's commands talk to, if it has one
    proc: subprocess.Popen[bytes] | None = None
    #: run only when named with --tool (the containerd workers: a worker comparison)
    opt_in = False

    def __init__(self, work: Path, registry: str) -> None:
        self.work = work / self.name
        self.registry = registry
        self.env = ENV

    @staticmethod
    def missing() -> str | None:
        """Why this tool cannot run here, or None."""
        return None

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)

    def daemons(self) -> list[int]:
        """The pids of the daemons this tool's commands talk to: their memory is the tool's."""
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)

    def reset(self) -> None:
        raise NotImplementedError

    def build(self, spec: Build) -> None:
        raise NotImplementedError

    def build_many(self, specs: list[Build]) -> None:
        """Several builds at once; they share what they have in common."""
        procs = [
            subprocess.Popen(
                self._command(s, n), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for n, s in enumerate(specs)
        ]
        CLIENTS.update(p.pid for p in procs)
        try:
            errors = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
        finally:
            CLIENTS.difference_update(p.pid for p in procs)
        for proc, err in zip(procs, errors, strict=True):
            if proc.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"{Path(proc.args[0]).name} exited {proc.returncode}: {tail}")

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        raise Unsupported

    def build_llb(self, data: bytes) -> None:
        raise Unsupported


def _frontend_args(spec: Build) -> list[str]:
    out = [
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={spec.context}",
        "--local",
        f"dockerfile={spec.context}",
    ]
    for key, value in spec.args.items():
        out += ["--opt", f"build-arg:{key}={value}"]
    if spec.target:
        out += ["--opt", f"target={spec.target}"]
    if spec.oci is not None:
        out += ["--output", f"type=oci,dest={spec.oci},compression={spec.compression}"]
    if spec.export_cache:
        out += ["--export-cache", spec.export_cache]
    if spec.import_cache:
        out += ["--import-cache", spec.import_cache]
    if spec.trace is not None:
        out += ["--trace", str(spec.trace)]
    return out


def _docker_style_args(spec: Build) -> list[str]:
    """Build args, target and context as ``docker build`` and ``buildah bud`` take them."""
    out = []
    for key, value in spec.args.items():
        out += ["--build-arg", f"{key}={value}"]
    if spec.target:
        out += ["--target", spec.target]
    return [*out, str(spec.context)]


class Llbkit(Tool):
    """``llbkit build``, embedded: a new process per build, as a user runs it."""

    name = "llbkit"
    takes_llb = True
    moves_cache = True

    @property
    def root(self) -> Path:
        return self.work / "root"

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        return [
            LLBKIT,
            "--root",
            str(self.root),
            "build",
            "--progress",
            "quiet",
            *_frontend_args(spec),
        ]

    def build(self, spec: Build) -> None:
        run(self._command(spec))

    def build_many(self, specs: list[Build]) -> None:
        # One root has one owner: concurrent builds share one engine, through the Python API.
        run(
            [
                sys.executable,
                str(HERE / "shared_engine.py"),
                str(self.root),
                *(f"{s.context}|{','.join(f'{k}={v}' for k, v in s.args.items())}" for s in specs),
            ]
        )

    def build_llb(self, data: bytes) -> None:
        run([LLBKIT, "--root", str(self.root), "build", "--progress", "quiet"], data=data)


class Llbkitd(Tool):
    """``llbkit --addr`` against an llbkitd this harness starts: llbkit as BuildKit is used,
    a client of a running daemon (a new client process per build)."""

    name = "llbkitd"
    takes_llb = True
    moves_cache = True

    def start(self) -> None:
        super().start()
        sock = self.work / "llbkitd.sock"
        self.addr = f"unix://{sock}"
        self.proc = subprocess.Popen(
            [
                str(Path(LLBKIT).with_name("llbkitd")),
                "--root",
                str(self.work / "root"),
                "--addr",
                self.addr,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        _wait_for([LLBKIT, "--addr", self.addr, "debug", "workers"], self.proc, "llbkitd")

    def reset(self) -> None:
        run([LLBKIT, "--addr", self.addr, "prune", "--all"])

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        return [LLBKIT, "--addr", self.addr, "build", "--progress", "quiet", *_frontend_args(spec)]

    def build(self, spec: Build) -> None:
        run(self._command(spec))

    def build_llb(self, data: bytes) -> None:
        run([LLBKIT, "--addr", self.addr, "build", "--progress", "quiet"], data=data)


class Buildctl(Tool):
    """buildctl against a buildkitd this harness starts (the one on PATH)."""

    name = "buildkit"
    takes_llb = True
    moves_cache = True

    @staticmethod
    def missing() -> str | None:
        if os.geteuid() != 0:
            return "buildkitd needs root here"
        absent = [b for b in ("buildkitd", "buildctl", "runc") if shutil.which(b) is None]
        return f"not on PATH: {', '.join(absent)}" if absent else None

    def start(self) -> None:
        super().start()
        self.start_buildkitd()

    def start_buildkitd(self, *flags: str) -> None:
        """buildkitd on this tool's socket and state, with ``flags`` (its worker's)."""
        sock = self.work / "buildkitd.sock"
        config = self.work / "buildkitd.toml"
        config.write_text(f'[registry."{self.registry}"]\n  http = true\n  insecure = true\n')
        self.addr = f"unix://{sock}"
        self.proc = subprocess.Popen(
            [
                "buildkitd",
                "--root",
                str(self.work / "state"),
                "--addr",
                self.addr,
                "--config",
                str(config),
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(["buildctl", "--addr", self.addr, "debug", "workers"], self.proc, "buildkitd")

    def reset(self) -> None:
        run(["buildctl", "--addr", self.addr, "prune", "--all"])

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        return [
            "buildctl",
            "--addr",
            self.addr,
            "build",
            "--progress",
            "plain",
            *_frontend_args(spec),
        ]

    def build(self, spec: Build) -> None:
        run(self._command(spec))

    def build_llb(self, data: bytes) -> None:
        run(["buildctl", "--addr", self.addr, "build", "--progress", "plain"], data=data)


class _WithContainerd:
    """A containerd of the tool's own (its root, state and socket in the tool's folder)."""

    _containerd: contextlib.ExitStack | None = None
    containerd: Any = None

    @staticmethod
    def containerd_missing() -> str | None:
        if os.geteuid() != 0:
            return "containerd needs root here"
        absent = [
            b for b in ("containerd", "ctr", "containerd-shim-runc-v2") if not shutil.which(b)
        ]
        return f"not on PATH: {', '.join(absent)}" if absent else None

    def start_containerd(self) -> None:
        from llbkit.sdk.testing.containerd import running_containerd

        self._containerd = contextlib.ExitStack()
        self.containerd = self._containerd.enter_context(running_containerd())

    def stop_containerd(self) -> None:
        if self._containerd is not None:
            self._containerd.close()
            self._containerd = None

    def containerd_pids(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-f", f"containerd --config {Path(self.containerd.address).parent}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(p) for p in found.stdout.split()]


class LlbkitContainerd(_WithContainerd, Llbkit):
    """``llbkit build`` embedded, its steps run by the containerd worker (buildkitd.toml)."""

    name = "llbkit-containerd"
    moves_cache = False
    opt_in = True

    @staticmethod
    def missing() -> str | None:
        return _WithContainerd.containerd_missing()

    def start(self) -> None:
        super().start()
        self.start_containerd()
        self.config = self.work / "buildkitd.toml"
        self.config.write_text(
            f"[worker.oci]\nenabled = false\n[worker.containerd]\nenabled = true\n"
            f'address = "{self.containerd.address}"\nnamespace = "{self.containerd.namespace}"\n'
        )

    def daemons(self) -> list[int]:
        return self.containerd_pids()

    def stop(self) -> None:
        self.stop_containerd()

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        command = super()._command(spec, n)
        return [command[0], "--config", str(self.config), *command[1:]]

    def build_many(self, specs: list[Build]) -> None:
        raise Unsupported

    def build_llb(self, data: bytes) -> None:
        command = [LLBKIT, "--config", str(self.config), "--root", str(self.root), "build"]
        run([*command, "--progress", "quiet"], data=data)


class BuildctlContainerd(_WithContainerd, Buildctl):
    """buildctl against a buildkitd whose worker is containerd's (``--containerd-worker``)."""

    name = "buildkit-containerd"
    moves_cache = False
    opt_in = True

    @staticmethod
    def missing() -> str | None:
        return Buildctl.missing() or _WithContainerd.containerd_missing()

    def start(self) -> None:
        Tool.start(self)
        self.start_containerd()
        self.start_buildkitd(
            "--oci-worker=false",
            "--containerd-worker=true",
            f"--containerd-worker-addr={self.containerd.address}",
            f"--containerd-worker-namespace={self.containerd.namespace}",
        )

    def daemons(self) -> list[int]:
        return [*super().daemons(), *self.containerd_pids()]

    def stop(self) -> None:
        super().stop()
        self.stop_containerd()


class Docker(Tool):
    """``docker build`` with the BuildKit inside Debian's dockerd, on a private socket."""

    name = "docker"
    writes_oci = False  # docker 20.10's build writes local and tar outputs only

    @staticmethod
    def _client() -> str | None:
        # The client packaged with Debian's dockerd: newer clients want a buildx plugin.
        for candidate in ("/usr/bin/docker", shutil.which("docker")):
            if candidate and Path(candidate).exists():
                return candidate
        return None

    @staticmethod
    def missing() -> str | None:
        if os.geteuid() != 0:
            return "dockerd needs root here"
        if shutil.which("dockerd") is None or Docker._client() is None:
            return "dockerd is not installed (apt-get install docker.io)"
        return None

    def start(self) -> None:
        super().start()
        sock = self.work / "docker.sock"
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--host",
                f"unix://{sock}",
                "--data-root",
                str(self.work / "data"),
                "--exec-root",
                str(self.work / "exec"),
                "--pidfile",
                str(self.work / "pid"),
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = [str(self._client()), "-H", f"unix://{sock}"]
        _wait_for([*self.client, "version"], self.proc, "dockerd")
        self.env = {**ENV, "DOCKER_BUILDKIT": "1"}

    def reset(self) -> None:
        run([*self.client, "builder", "prune", "--all", "--force"], env=self.env)
        run([*self.client, "image", "prune", "--all", "--force"], env=self.env)

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        command = [*self.client, "build", "--progress", "plain", "--network", "host"]
        return [*command, *_docker_style_args(spec)]

    def build(self, spec: Build) -> None:
        run(self._command(spec), env=self.env)


class Buildah(Tool):
    """``buildah bud`` with its own storage; oci tarballs by ``buildah push oci-archive:``."""

    name = "buildah"

    @staticmethod
    def missing() -> str | None:
        if os.geteuid() != 0:
            return "buildah needs root here"
        return None if shutil.which("buildah") else "buildah is not installed"

    def _base(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.work / "storage"),
            "--runroot",
            str(self.work / "run"),
            "--storage-driver",
            "overlay",
        ]

    def reset(self) -> None:
        run([*self._base(), "rm", "--all"])
        run([*self._base(), "rmi", "--all", "--force"])

    def _command(self, spec: Build, n: int = 0) -> list[str]:
        command = [
            *self._base(),
            "bud",
            "--tls-verify=false",
            "--layers",
            "--jobs",
            "4",
            "--isolation",
            "oci",
            "--network",
            "host",
            "-q",
            "-t",
            f"bench{n}",
        ]
        return [*command, *_docker_style_args(spec)]

    def build(self, spec: Build) -> None:
        run(self._command(spec))
        if spec.oci is not None:
            fmt = {"gzip": "gzip", "zstd": "zstd", "uncompressed": "uncompressed"}[spec.compression]
            run(
                [
                    *self._base(),
                    "push",
                    "--format",
                    "oci",
                    "--compression-format",
                    fmt,
                    "bench0",
                    f"oci-archive:{spec.oci}",
                ]
            )


TOOLS: list[type[Tool]] = [
    Llbkit,
    Llbkitd,
    Buildctl,
    Docker,
    Buildah,
    LlbkitContainerd,
    BuildctlContainerd,
]
