"""Every recorded export case (tests/differential/vectors/exports/, recorded from BuildKit
v0.11.6 by ``scripts/record_differential.py --exports``) exported by the ``llbkit`` command:
the same ``--metadata-file`` answer and archive layout by shape, or the same error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.differential.exports import (
    DELIBERATE,
    DOCKERFILE,
    WARM_OUTPUT,
    ExportCase,
    export_error,
    export_result,
    load_exports,
    output_flag,
)
from tests.differential.harness import substitute
from tests.differential.known import KNOWN

VECTORS = load_exports()
LLBKIT = [sys.executable, "-m", "llbkit.core"]

pytestmark = [pytest.mark.root, pytest.mark.services]


@pytest.fixture(scope="module")
def shared(busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A root that built the shared Dockerfile once (each case is the export alone, as the
    recording's warm daemon), and the registry's host."""
    registry = busybox_image.split("/", 1)[0]
    where = tmp_path_factory.mktemp("exports")
    (where / "build").mkdir()
    (where / "build" / "Dockerfile").write_text(substitute(DOCKERFILE, registry))
    warm = WARM_OUTPUT.replace("@DEST@", str(where / "warm.tar"))
    done = _build(where / "root", where / "build", ["--output", warm])
    assert done.returncode == 0, done.stderr
    return where, registry


def _build(root: Path, folder: Path, extra: list[str]) -> subprocess.CompletedProcess[bytes]:
    command = [*LLBKIT, "--root", str(root), "build", "--progress", "quiet"]
    command += ["--frontend", "dockerfile.v0", "--local", f"context={folder}"]
    command += ["--local", f"dockerfile={folder}", *extra]
    return subprocess.run(command, capture_output=True, timeout=300)


def _param(case: ExportCase, result: dict[str, Any]) -> Any:
    marks = [pytest.mark.xfail(reason=KNOWN[case.name], strict=True)] if case.name in KNOWN else []
    return pytest.param(case, result, id=case.name, marks=marks)


@pytest.mark.parametrize(("case", "expected"), [_param(c, r) for c, r in VECTORS])
def test_exports_as_buildkit(
    case: ExportCase,
    expected: dict[str, Any],
    shared: tuple[Path, str],
    tmp_path: Path,
    record_property: Any,
) -> None:
    record_property("category", "exports")
    where, registry = shared
    dest, answer = tmp_path / "out", tmp_path / "metadata.json"
    flag = output_flag(case, dest, registry)
    done = _build(
        where / "root",
        where / "build",
        [*case.flags, "--output", flag, "--metadata-file", str(answer)],
    )
    if case.name in DELIBERATE:  # llbkit refuses what BuildKit v0.11 takes unchecked
        record_property("deliberate", True)
        assert "error" not in expected, f"{case.name}: BuildKit refuses it now; see exports.py"
        assert done.returncode != 0 and DELIBERATE[case.name] in done.stderr.decode()
        return
    if done.returncode != 0:
        lines = done.stderr.decode().strip().splitlines()
        got: dict[str, Any] = {"error": export_error(lines[-1] if lines else "failed", registry)}
        assert "error" in expected, f"llbkit failed: {got['error']}"
        assert expected["error"] in got["error"], (
            f"error text: BuildKit {expected['error']!r}, llbkit {got['error']!r}"
        )
        return
    assert "error" not in expected, f"BuildKit failed ({expected['error']}); llbkit exported it"
    metadata = json.loads(answer.read_text()) if answer.exists() else {}
    got = export_result(metadata, dest, case, registry)
    for part in ("metadata", "archive"):
        assert got.get(part) == expected.get(part), (
            f"{part}: BuildKit {json.dumps(expected.get(part))[:1500]}\n"
            f"  vs llbkit {json.dumps(got.get(part))[:1500]}"
        )
