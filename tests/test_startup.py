"""What a command imports is what it pays for at every start: the modules a path never uses
stay unimported (the warm no-op build's time is mostly start-up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: prints, at exit, which of the watched modules the command imported
_RUN = """
import atexit, json, sys
watched = json.loads(sys.argv[1])
loaded = lambda: sorted(m for m in watched if sys.modules.get(m) is not None)
atexit.register(lambda: print(json.dumps(loaded())))
sys.argv = ["llbkit", *sys.argv[2:]]
from llbkit.core.cli.main import main
main()
"""
#: the same, through the ``llbkit`` command's first step (which takes plain builds itself)
_ENTRY = _RUN.replace(
    "from llbkit.core.cli.main import main\nmain()", "from llbkit.core.cli.entry import run\nrun()"
)


def _imported(
    watched: list[str], argv: list[str], env: dict[str, str], *, entry: bool = False
) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY if entry else _RUN, json.dumps(watched), *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout, done.stderr
    if argv[0] == "build":
        assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_an_embedded_build_imports_no_display_or_descriptor_modules(tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a").write_text("a\n")
    argv = ["build", "--progress", "quiet", "--frontend", "dockerfile.v0"]
    argv += ["--local", f"context={context}", "--local", f"dockerfile={context}"]
    # A base from a registry: the registry client speaks HTTP itself (httpx and httpcore
    # cost 35 ms to import), and nothing imports a display (rich, pygments).
    watched = ["httpx", "httpcore", "rich", "pygments", "google.protobuf.descriptor_pb2"]
    watched += ["click.testing", "tarfile"]  # the pull unpacks a layer; a cached build reads no tar
    env = {"LLBKIT_ROOT": str(tmp_path / "root")}
    with LocalRegistry(tmp_path / "registry") as registry:
        push_image(registry.host, "library/busybox:latest", [busybox_layer()])
        dockerfile = f"FROM {registry.host}/library/busybox\nCOPY a /a\n"
        (context / "Dockerfile").write_text(dockerfile)
        assert _imported(watched, argv, env) == ["tarfile"]
        assert _imported(watched, argv, env) == []  # warm
        # The ``llbkit`` command takes such a build without click.
        assert _imported([*watched, "click"], argv, env, entry=True) == []


def test_a_command_for_a_daemon_loads_no_plugins(tmp_path: Path) -> None:
    argv = ["--addr", f"unix://{tmp_path}/none.sock", "debug", "workers"]
    watched = ["pluggy", "llbkit.core.plugins.registry", "llbkit.core.solver.solver", "tomllib"]
    assert _imported(watched, argv, {}) == []
    # A build for a daemon reads no configuration (no TOML reader) and loads no plugins.
    build = ["--addr", f"unix://{tmp_path}/none.sock", "build", "--local", f"context={tmp_path}"]
    assert _imported(watched, build, {}) == []


_LEAVE = """
import sys, threading, time
from llbkit.core.cli.exiting import leave
leaked = open(sys.argv[1], "w")
leaked.write("kept\\n")  # never closed: freeing it would have flushed it
def late():
    time.sleep(0.2)
    with open(sys.argv[1] + ".thread", "w") as out:
        out.write("done\\n")
threading.Thread(target=late).start()
print("out", end="")
leave(eval(sys.argv[2]))
"""


@pytest.mark.parametrize(("code", "status", "stderr"), [(0, 0, ""), (3, 3, ""), ("bad", 1, "bad")])
def test_leaving_fast_still_does_what_an_exit_does(
    tmp_path: Path, code: object, status: int, stderr: str
) -> None:
    """The command ends without the interpreter's teardown, and without what that would
    have done: buffered writes flushed, running threads waited for, sys.exit's status."""
    target = tmp_path / "leaked"
    done = subprocess.run(
        [sys.executable, "-c", _LEAVE, str(target), repr(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr.strip()) == (status, "out", stderr)
    assert target.read_text() == "kept\n"
    assert (tmp_path / "leaked.thread").read_text() == "done\n"


def test_the_command_exits_with_its_status(tmp_path: Path) -> None:
    llbkit = [sys.executable, "-m", "llbkit.core"]
    version = subprocess.run([*llbkit, "--version"], capture_output=True, text=True, check=False)
    assert (version.returncode, version.stdout.startswith("llbkit ")) == (0, True)
    unknown = subprocess.run([*llbkit, "nosuch"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "no such command 'nosuch'" in unknown.stderr
    refused = subprocess.run(
        [*llbkit, "--root", str(tmp_path / "root"), "build", "--frontend", "nosuch"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1 and "unknown frontend 'nosuch'" in refused.stderr
