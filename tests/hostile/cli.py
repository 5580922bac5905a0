"""Running ``llbkit`` as a user does, and checking that a refusal is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LLBKIT = [sys.executable, "-m", "llbkit.core"]


def llbkit(
    root: Path, *args: str, stdin: bytes = b"", timeout: float = 120, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    head = [*LLBKIT, "--root", str(root)] + (["--config", str(config)] if config else [])
    return subprocess.run(
        [*head, *args], input=stdin.decode(), capture_output=True, text=True, timeout=timeout
    )


def dockerfile_build(
    root: Path, context: Path, *extra: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``llbkit build`` of ``context/Dockerfile``, plain progress."""
    return llbkit(
        root,
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={context}",
        "--local",
        f"dockerfile={context}",
        *extra,
        config=config,
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The failure's message: the last line, with no traceback anywhere."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), done.stderr
    return lines[-1]
