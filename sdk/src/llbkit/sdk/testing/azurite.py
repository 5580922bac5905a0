"""Azurite, Microsoft's Azure Storage emulator, on loopback for tests: its blob service only.

Azurite is a node package. :func:`find_azurite` looks for it in ``$LLBKIT_AZURITE_DIR``, else
``.tools/azurite`` of the checkout the tests run from (``scripts/setup.sh`` installs it there as
root), and installs it there with npm when it is missing; without node or npm the
:func:`azurite` fixture skips, saying why. The emulator keeps everything in memory.

    from llbkit.sdk.testing.azurite import azurite  # a session fixture, used by name
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

__all__ = ["ACCOUNT", "KEY", "VERSION", "Azurite", "AzuriteUnavailable", "azurite", "find_azurite"]

#: pinned: 3.36+ declare node >= 21, and npm on node 20 would quietly pick 3.35 otherwise
VERSION = "3.37.0"
#: Azurite's well-known development account and key (public, in Microsoft's documentation)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_SCRIPT = Path("node_modules/.bin/azurite-blob")


class AzuriteUnavailable(RuntimeError):
    """Azurite cannot run here; the message says what is missing."""


def default_directory() -> Path:
    """Where Azurite is (or goes): ``$LLBKIT_AZURITE_DIR``, else ``.tools/azurite`` of the
    checkout around the working directory, else ``~/.cache/llbkit/azurite``."""
    if configured := os.environ.get("LLBKIT_AZURITE_DIR"):
        return Path(configured)
    here = Path.cwd()
    for base in (here, *here.parents):
        if (base / "scripts/setup.sh").is_file() and (base / ".tools").is_dir():
            return base / ".tools/azurite"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llbkit/azurite"


def find_azurite(directory: Path | None = None, *, install: bool = True) -> list[str]:
    """The command that starts Azurite's blob service, installing it into ``directory`` with
    npm when it is not there yet (once: concurrent sessions wait for each other)."""
    node = shutil.which("node")
    if node is None:
        raise AzuriteUnavailable("node is not installed (Azurite is a node package)")
    directory = directory or default_directory()
    script = directory / _SCRIPT
    if script.exists():
        return [node, str(script)]
    npm = shutil.which("npm")
    if not install or npm is None:
        raise AzuriteUnavailable(
            f"Azurite is not installed in {directory}; install it with: npm install "
            f"--no-audit --no-fund --prefix {directory} azurite@{VERSION}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing it right now
        if not script.exists():
            try:
                done = subprocess.run(
                    [
                        npm,
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--prefix",
                        str(directory),
                        f"azurite@{VERSION}",
                    ],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
            except subprocess.TimeoutExpired:
                raise AzuriteUnavailable(f"npm install azurite@{VERSION} timed out") from None
            if done.returncode != 0 or not script.exists():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise AzuriteUnavailable(f"npm install azurite@{VERSION} failed: {last}")
    return [node, str(script)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Azurite:
    """Azurite's blob service on a free 127.0.0.1 port; use as a context manager."""

    directory: Path | None = None
    port: int = 0
    account: str = ACCOUNT
    key: str = KEY
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The account URL, path-style: ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def connection_string(self) -> str:
        """For ``BlobServiceClient.from_connection_string``, to look at what a test stored."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.url};"
        )

    def __enter__(self) -> Azurite:
        command = find_azurite(self.directory)
        self.port = self.port or _free_port()
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [
                *command,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--inMemoryPersistence",
                "--silent",
                # azure-storage-blob may send an x-ms-version newer than Azurite knows.
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                httpx.get(self.url, timeout=2)  # any answer (403) means ready
                return self
            time.sleep(0.05)
        self._log.seek(0)
        said = self._log.read().decode(errors="replace").strip().splitlines()
        self.__exit__()
        raise RuntimeError(f"Azurite did not start: {said[-1] if said else 'no output'}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A running :class:`Azurite` for the session; skips, saying why, where it cannot run."""
    pytest.importorskip("azure.storage.blob", reason="azure-storage-blob is not installed")
    try:
        find_azurite()
    except AzuriteUnavailable as err:
        pytest.skip(f"Azurite is unavailable: {err}")
    with Azurite() as server:
        yield server
