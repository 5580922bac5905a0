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
    assert "[stage-1 2/4] COPY --from=build /src/message.txt /app/message.txt" in built.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    if shutil.which("skopeo"):
        inspected = subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True, text=True
        )
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == meta["containerimage.digest"]


def test_metadata_file_decodes_descriptors_as_buildctl(tmp_path):
    import base64

    from llbkit.core.cli.build import _decoded

    encoded = base64.b64encode(json.dumps({"mediaType": "x", "size": 1}).encode()).decode()
    assert _decoded(encoded) == {"mediaType": "x", "size": 1}
    assert _decoded("sha256:abc") == "sha256:abc"
    assert _decoded(base64.b64encode(b"[1]").decode()) == base64.b64encode(b"[1]").decode()
