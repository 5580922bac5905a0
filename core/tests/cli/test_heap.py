"""The ``llbkit`` command restarts itself once on glibc's malloc with huge pages, and what it
runs gets the user's environment back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.core.cli import heap

#: the command through its entry point; prints the two variables as the interpreter started
#: with them, and, at exit, as a child process started by the build would get them; a fault
#: costs what the test says (``DEAR``), not what it costs on this machine
_SPY = (
    "import atexit, os, sys\n"
    "from llbkit.core.cli import heap\n"
    "heap._faults_dear = lambda: os.environ.get('DEAR') == '1'\n"
    "seen = lambda: [os.environ.get(v) for v in ('PYTHONMALLOC', 'GLIBC_TUNABLES')]\n"
    "print('start', *seen(), file=sys.stderr)\n"
    "atexit.register(lambda: print('end', *seen(), file=sys.stderr))\n"
    "sys.argv = ['llbkit', *sys.argv[1:]]\n"
    "from llbkit.core.cli.entry import run\n"
    "run()\n"
)

_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _build(tmp_path: Path, env: dict[str, str], *extra: str, dear: bool = True) -> list[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    argv = [*extra, "--root", str(tmp_path / "root"), "build", "--progress", "quiet"]
    argv += ["--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
    argv += ["--local", f"dockerfile={ctx}"]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "GLIBC_TUNABLES")}
    ran = subprocess.run(
        [sys.executable, "-c", _SPY, *argv],
        env={**clean, **env, "DEAR": "1" if dear else "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return [line for line in ran.stderr.splitlines() if line.startswith(("start", "end"))]


@pytest.mark.skipif(
    sys.platform != "linux"
    or b"[never]" in (_HUGE_PAGES.read_bytes() if _HUGE_PAGES.exists() else b"[never]"),
    reason="no transparent huge pages here",
)
def test_an_embedded_build_restarts_on_huge_pages_and_its_children_get_the_users_env(
    tmp_path: Path,
) -> None:
    assert _build(tmp_path, {}) == [
        "start None None",  # the command as the user started it
        "start malloc glibc.malloc.hugetlb=1",  # started again, once
        "end None None",  # what the build runs sees the user's environment
    ]


def test_where_a_fault_is_cheap_the_command_is_not_started_again(tmp_path: Path) -> None:
    assert _build(tmp_path, {}, dear=False) == ["start None None", "end None None"]


@pytest.mark.parametrize(("threshold", "dear"), [(0.0, True), (1e9, False)])
def test_the_probe_times_fresh_pages_against_the_threshold(
    monkeypatch: pytest.MonkeyPatch, *, threshold: float, dear: bool
) -> None:
    monkeypatch.setattr(heap, "DEAR_FAULT_US", threshold)
    assert heap._faults_dear() is dear


def test_an_allocator_the_user_chose_is_kept(tmp_path: Path) -> None:
    assert _build(tmp_path, {"PYTHONMALLOC": "pymalloc"}) == [
        "start pymalloc None",
        "end pymalloc None",
    ]
    assert _build(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == [
        "start None glibc.malloc.arena_max=2",
        "end None glibc.malloc.arena_max=2",
    ]


@pytest.mark.parametrize(
    ("argv", "env", "modes", "wanted"),
    [
        (["build"], {}, b"always [madvise] never\n", True),
        (["build"], {}, b"[always] madvise never\n", True),
        (["build"], {}, b"always madvise [never]\n", False),
        (["build"], {}, None, False),  # a kernel without transparent huge pages
        (["--addr", "unix:///run/x.sock", "build"], {}, b"[madvise]\n", False),
        (["--addr=unix:///run/x.sock", "build"], {}, b"[madvise]\n", False),
        (["build"], {"BUILDKIT_HOST": "unix:///run/x.sock"}, b"[madvise]\n", False),
    ],
)
def test_which_commands_restart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    argv: list[str],
    env: dict[str, str],
    modes: bytes | None,
    wanted: bool,
) -> None:
    """Not a build through a daemon (the light client's start is a few milliseconds), nor on
    a kernel that offers no huge pages."""
    enabled = tmp_path / "enabled"
    if modes is not None:
        enabled.write_bytes(modes)
    monkeypatch.setattr(heap, "_THP", str(enabled))
    monkeypatch.setattr(heap, "_faults_dear", lambda: True)
    for name in ("PYTHONMALLOC", "GLIBC_TUNABLES", "BUILDKIT_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert heap._wanted(argv, "BUILDKIT_HOST") is wanted


def test_a_bundled_interpreter_is_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enabled = tmp_path / "enabled"
    enabled.write_bytes(b"always [madvise] never\n")
    monkeypatch.setattr(heap, "_THP", str(enabled))
    monkeypatch.setattr(heap, "_faults_dear", lambda: True)
    for name in ("PYTHONMALLOC", "GLIBC_TUNABLES", "BUILDKIT_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert heap._wanted(["build"], "BUILDKIT_HOST")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert not heap._wanted(["build"], "BUILDKIT_HOST")
