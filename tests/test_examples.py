"""The examples the README points at run and produce what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_hello_llb_writes_a_definition_dump_llb_reads():
    made = subprocess.run(
        [sys.executable, str(ROOT / "examples/hello_llb.py")], capture_output=True
    )
    assert made.returncode == 0, made.stderr
    dumped = subprocess.run(
        [sys.executable, "-m", "llbkit.core", "debug", "dump-llb"],
        input=made.stdout,
        capture_output=True,
    )
    assert dumped.returncode == 0, dumped.stderr
    objects = [json.loads(line) for line in dumped.stdout.splitlines()]
    kinds = [next(iter(o["Op"]["Op"] or {"terminal": None})) for o in objects]
    assert kinds == ["source", "exec", "file", "file", "merge", "terminal"]
    cache = objects[1]["Op"]["Op"]["exec"]["mounts"][1]
    assert cache["cacheOpt"] == {"ID": "demo-cache", "sharing": 2}


def test_site_example_builds_with_the_embedded_engine(tmp_path):
    made = subprocess.run([sys.executable, str(ROOT / "examples/site_llb.py")], capture_output=True)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "site"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "llbkit.core",
            "--root",
            str(tmp_path / "state"),
            "build",
            "--progress",
            "plain",
            "--local",
            f"site={ROOT / 'examples/site'}",
            "--output",
            f"type=local,dest={out}",
        ],
        input=made.stdout,
        capture_output=True,
    )
    assert built.returncode == 0, built.stderr
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["www", "www/about.md", "www/index.md", "www/meta", "www/meta/robots.txt"]


@pytest.mark.root
def test_app_example_from_an_oci_layout_base(tmp_path):
    import shutil

    if shutil.which("runc") is None or shutil.which("busybox") is None:
        pytest.skip("runc and busybox-static are needed")
    layout = tmp_path / "busybox-layout"
    made = subprocess.run(
        [sys.executable, str(ROOT / "examples/busybox_layout.py"), str(layout)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    digest = made.stdout.strip()
    app = ROOT / "examples/app"
    out = tmp_path / "app.tar"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "llbkit.core",
            "--root",
            str(tmp_path / "state"),
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={app}",
            "--local",
            f"dockerfile={app}",
            "--oci-layout",
            f"busybox={layout}",
            "--opt",
            f"context:busybox=oci-layout://busybox@{digest}",
            "--opt",
            "build-arg:BASE=busybox",
            "--progress",
            "plain",
            "--output",
            f"type=oci,dest={out},name=example/app:latest",
            "--metadata-file",
            str(tmp_path / "meta.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert "[stage-1 1/2] COPY --from=build /src/message.txt /app/message.txt" in built.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    if shutil.which("skopeo"):
        inspected = subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True, text=True
        )
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == meta["containerimage.digest"]


def test_metadata_file_decodes_descriptors_as_buildctl(tmp_path):
    import base64

    from llbkit.core.cli.buildflags import decoded_metadata as _decoded

    encoded = base64.b64encode(json.dumps({"mediaType": "x", "size": 1}).encode()).decode()
    assert _decoded(encoded) == {"mediaType": "x", "size": 1}
    assert _decoded("sha256:abc") == "sha256:abc"
    assert _decoded(base64.b64encode(b"[1]").decode()) == base64.b64encode(b"[1]").decode()


def _venv_python() -> str:
    """The interpreter a user runs the examples with (the README's ``.venv/bin/python``)."""
    python = ROOT / ".venv/bin/python"
    return str(python) if python.exists() else sys.executable


@pytest.mark.root
def test_build_dockerfile_example_prints_steps_result_and_digest(tmp_path):
    import re
    import shutil

    if shutil.which("runc") is None or shutil.which("busybox") is None:
        pytest.skip("runc and busybox-static are needed")
    command = [_venv_python(), str(ROOT / "examples/build_dockerfile.py")]
    command += ["--root", str(tmp_path / "state")]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    out = built.stdout
    assert re.search(r"^#(\d+) \[build 2/4\] COPY greeting.txt \.$", out, re.M), out
    run = re.search(r"^#(\d+) \[build 3/4\] RUN echo", out, re.M)
    assert run, out
    step = run.group(1)
    assert f"\n#{step} | greeting: hi\n" in out  # the RUN step's log, under its number
    assert re.search(rf"^#{step} DONE \d+\.\ds$", out, re.M), out
    assert "read from the result: /app/shout.txt = HELLO FROM PYTHON\n" in out
    assert re.search(r"^image digest: sha256:[0-9a-f]{64}$", out, re.M), out

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert re.search(r"^#\d+ CACHED$", again.stdout, re.M), again.stdout
    assert "HELLO FROM PYTHON" in again.stdout


def _doc_snippets() -> list[object]:
    import re

    text = (ROOT / "docs/python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    # Only a snippet that builds examples/app runs a container.
    return [
        pytest.param(b, id=f"snippet{n}", marks=[pytest.mark.root] if "examples/app" in b else [])
        for n, b in enumerate(blocks, 1)
    ]


@pytest.mark.parametrize("snippet", _doc_snippets())
def test_python_api_doc_snippets_run_as_written(tmp_path, snippet):
    import shutil

    if "examples/app" in snippet and shutil.which("runc") is None:
        pytest.skip("runc is needed")
    # The snippets run from the repository root and write under out/.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    if "out/busybox-layout" in snippet:
        made = subprocess.run(
            [_venv_python(), str(ROOT / "examples/busybox_layout.py"), "out/busybox-layout"],
            cwd=tmp_path,
            capture_output=True,
        )
        assert made.returncode == 0, made.stderr
    (tmp_path / "snippet.py").write_text(snippet)
    ran = subprocess.run(
        [_venv_python(), "snippet.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip(), "every snippet prints what it shows"
