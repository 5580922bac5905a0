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


def _imported(watched: list[str], argv: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(watched), *argv],
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
    # A base from a registry: the build imports the registry client (httpx), and so its
    # command line (rich, pygments) unless kept out.
    watched = ["httpx", "rich", "pygments", "google.protobuf.descriptor_pb2", "click.testing"]
    env = {"LLBKIT_ROOT": str(tmp_path / "root")}
    with LocalRegistry(tmp_path / "registry") as registry:
        push_image(registry.host, "library/busybox:latest", [busybox_layer()])
        dockerfile = f"FROM {registry.host}/library/busybox\nCOPY a /a\n"
        (context / "Dockerfile").write_text(dockerfile)
        assert _imported(watched, argv, env) == ["httpx"]
        assert _imported(watched, argv, env) == ["httpx"]  # warm, too


def test_a_command_for_a_daemon_loads_no_plugins(tmp_path: Path) -> None:
    argv = ["--addr", f"unix://{tmp_path}/none.sock", "debug", "workers"]
    watched = ["pluggy", "llbkit.core.plugins.registry", "llbkit.core.solver.solver"]
    assert _imported(watched, argv, {}) == []
