"""Images that stand on the same layers: a layer the store has (same diff id on the same
layers below) is not pulled again, in one build or a later one, as BuildKit reuses a
snapshot by its chain id; what is built and exported is the same as from a fresh store."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llbkit.sdk.testing.registry import LocalRegistry, layer_tar, push_image

pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry is not installed"
)

BASE = [layer_tar({"etc/": None, "etc/base": "b\n"}), layer_tar({"etc/mid": "m\n"})]
TOP = layer_tar({"etc/top": "t\n"})


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _attempt(
    root: Path, work: Path, dockerfile: str, *out: str, progress: str = "plain"
) -> subprocess.CompletedProcess[str]:
    """Build ``dockerfile`` with a fresh context, however it ends."""
    ctx = work / "ctx"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    argv = [sys.executable, "-m", "llbkit.core", "--root", str(root), "build"]
    argv += ["--progress", progress, "--frontend", "dockerfile.v0"]
    argv += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}", *out]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _build(root: Path, work: Path, dockerfile: str, *out: str, progress: str = "plain") -> str:
    """Build ``dockerfile`` with a fresh context; the progress (plain unless asked)."""
    ran = _attempt(root, work, dockerfile, *out, progress=progress)
    assert ran.returncode == 0, ran.stderr
    return ran.stderr


def _extracted(progress: str) -> list[str]:
    """The layers shown unpacked (each one once, when done)."""
    return re.findall(r"extracting (sha256:[0-9a-f]{64}).* done$", progress, re.M)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as running:
        push_image(running.host, "lib/base:1", BASE)
        push_image(running.host, "lib/app:1", [*BASE, TOP])
        push_image(running.host, "lib/other:1", [BASE[0], TOP])
        yield running.host


def test_a_later_image_on_the_same_layers_pulls_only_its_own(tmp_path: Path, registry: str) -> None:
    root = tmp_path / "root"
    first = _build(
        root, tmp_path, f"FROM {registry}/lib/base:1\n", "-o", f"type=local,dest={tmp_path}/b"
    )
    assert sorted(_extracted(first)) == sorted(_digest(b) for b in BASE)
    later = _build(
        root, tmp_path, f"FROM {registry}/lib/app:1\n", "-o", f"type=local,dest={tmp_path}/out"
    )
    assert _extracted(later) == [_digest(TOP)]
    assert {p.name: p.read_text() for p in (tmp_path / "out" / "etc").iterdir()} == {
        "base": "b\n",
        "mid": "m\n",
        "top": "t\n",
    }
    # The same diff id on other layers below is another layer: pulled.
    other = _build(
        root, tmp_path, f"FROM {registry}/lib/other:1\n", "-o", f"type=local,dest={tmp_path}/o"
    )
    assert _extracted(other) == [_digest(TOP)]


def test_images_of_one_build_sharing_layers_pull_them_once(tmp_path: Path, registry: str) -> None:
    dockerfile = (
        f"FROM {registry}/lib/base:1 AS base\n"
        f"FROM {registry}/lib/app:1\n"
        "COPY --from=base /etc/base /copied\n"
    )
    progress = _build(tmp_path / "root", tmp_path, dockerfile)
    assert sorted(_extracted(progress)) == sorted(_digest(b) for b in [*BASE, TOP])


def _layers(archive: Path) -> tuple[list[str], list[str]]:
    """An OCI archive's image: its layers' digests, and its config's diff ids."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            read = tar.extractfile(f"blobs/{digest.replace(':', '/')}")
            assert read is not None
            return dict(json.load(read))

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = blob(index["manifests"][0]["digest"])
        config = blob(manifest["config"]["digest"])
    return [layer["digest"] for layer in manifest["layers"]], config["rootfs"]["diff_ids"]


def test_an_image_on_reused_layers_exports_as_from_a_fresh_store(
    tmp_path: Path, registry: str
) -> None:
    """The reused layers keep the blobs they were pulled as."""
    dockerfile = f"FROM {registry}/lib/app:1\nENV A=1\n"
    reused, fresh = tmp_path / "reused", tmp_path / "fresh"
    _build(reused, tmp_path, f"FROM {registry}/lib/base:1\n")
    _build(reused, tmp_path, dockerfile, "-o", f"type=oci,dest={tmp_path}/reused.tar")
    _build(fresh, tmp_path, dockerfile, "-o", f"type=oci,dest={tmp_path}/fresh.tar")
    layers = _layers(tmp_path / "reused.tar")
    assert layers == _layers(tmp_path / "fresh.tar")
    assert layers[0] == [_digest(b) for b in [*BASE, TOP]]


def test_an_image_only_exported_is_not_unpacked_until_a_step_reads_it(
    tmp_path: Path, registry: str
) -> None:
    """As BuildKit pulls lazily: a build that reads none of an image's files (``FROM`` and
    metadata) exports the registry's blobs, each download shown under the ``FROM`` step, and
    unpacks nothing; a later build whose step reads the files unpacks them then."""
    root = tmp_path / "root"
    pulled = [_digest(b) for b in [*BASE, TOP]]
    out = tmp_path / "out.tar"
    progress = _build(
        root, tmp_path, f"FROM {registry}/lib/app:1\nLABEL a=b\n", "-o", f"type=oci,dest={out}"
    )
    assert _extracted(progress) == []
    for digest in pulled:
        assert re.search(rf"^#\d+ {digest} \S+ / \S+ .*done$", progress, re.M), progress
    assert _layers(out)[0] == pulled
    assert list((root / "layers").iterdir()) == []
    # The downloads of one export reopen the FROM step once, not once each, as BuildKit's.
    events = _build(
        tmp_path / "fresh",
        tmp_path,
        f"FROM {registry}/lib/app:1\nLABEL a=b\n",
        "-o",
        f"type=oci,dest={tmp_path}/again.tar",
        progress="rawjson",
    )
    opened = {
        vertex["started"]
        for line in events.splitlines()
        if line.startswith("{")
        for vertex in json.loads(line).get("vertexes") or []
        if " FROM " in vertex["name"]
    }
    assert len(opened) == 2, events  # resolved, then reopened for the three downloads
    # COPY --link stacks its layer on the image's without reading them: still nothing unpacked.
    linked = _build(
        root,
        tmp_path,
        f"FROM {registry}/lib/app:1\nCOPY --link Dockerfile /d\n",
        "-o",
        f"type=oci,dest={out}",
    )
    assert _extracted(linked) == []
    assert _layers(out)[0][:3] == pulled and len(_layers(out)[0]) == 4
    later = _build(
        root,
        tmp_path,
        f"FROM {registry}/lib/app:1\nCOPY Dockerfile /d\n",
        "-o",
        f"type=local,dest={tmp_path}/files",
    )
    assert sorted(_extracted(later)) == sorted(pulled)
    assert sorted(p.name for p in (tmp_path / "files" / "etc").iterdir()) == ["base", "mid", "top"]


def test_a_build_without_an_exporter_pulls_no_image_no_step_reads(
    tmp_path: Path, registry: str
) -> None:
    """As BuildKit: with nothing exported and no step reading the image's files, ``FROM`` only
    resolves; no layer is downloaded or unpacked. A step that reads them pulls them then."""
    root = tmp_path / "root"
    progress = _build(root, tmp_path, f"FROM {registry}/lib/app:1\nLABEL a=b\n")
    assert "resolve " in progress
    assert not re.search(r"^#\d+ sha256:", progress, re.M), progress  # no download shown
    assert _extracted(progress) == []
    layer_blobs = {_digest(b).split(":")[1] for b in [*BASE, TOP]}
    assert not layer_blobs & {Path(p).name for p in _blob_files(root)}
    assert list((root / "layers").iterdir()) == []
    # Built again, the FROM step is resolved, not loaded: done, as BuildKit shows it; with an
    # exporter taking the result, found cached and reopened at once for the blobs it moves:
    # one block, the downloads in it, as buildctl shows it.
    again = _build(root, tmp_path, f"FROM {registry}/lib/app:1\nLABEL a=b\n")
    assert re.search(r"^#\d+ DONE", again, re.M) and "CACHED" not in again, again
    out = f"type=oci,dest={tmp_path}/o.tar"
    exported = _build(root, tmp_path, f"FROM {registry}/lib/app:1\nLABEL a=b\n", "-o", out)
    block = next(b for b in exported.split("\n\n") if " FROM " in b.splitlines()[0])
    assert re.search(r"^#\d+ sha256:\w+ .* done$", block, re.M), exported
    assert block.splitlines()[-1].split()[1] == "DONE" and "CACHED" not in exported, exported
    reads = _build(root, tmp_path, f"FROM {registry}/lib/app:1\nCOPY Dockerfile /d\n")
    assert sorted(_extracted(reads)) == sorted(_digest(b) for b in [*BASE, TOP])


#: a layer large enough to be unpacked while it downloads (the pull's ``STREAMED_FROM``)
LARGE = 10 << 20


def _status_times(rawjson: str) -> dict[str, tuple[str, str]]:
    """Each status of a ``rawjson`` progress: its first start and last completion."""
    found: dict[str, tuple[str, str]] = {}
    for line in rawjson.splitlines():
        if not line.startswith("{"):
            continue
        for status in json.loads(line).get("statuses") or []:
            began, ended = found.get(status["id"], ("~", ""))
            found[status["id"]] = (
                min(began, status.get("started") or "~"),
                max(ended, status.get("completed") or ""),
            )
    return found


def test_a_layer_left_unpulled_is_unpacked_while_it_downloads(tmp_path: Path) -> None:
    """A large layer of an image no step read until now is unpacked as its blob comes, as
    the eager pull does, not after the download: the extraction starts before the download
    is over, and the files are the layer's."""
    large = os.urandom(LARGE)
    layer = layer_tar({"data/": None, "data/large.bin": large})
    with LocalRegistry(tmp_path / "registry") as running:
        push_image(running.host, "lib/large:1", [BASE[0], layer])
        root, image = tmp_path / "root", f"{running.host}/lib/large:1"
        _build(root, tmp_path, f"FROM {image}\nLABEL a=b\n")  # resolved, not pulled
        assert list((root / "layers").iterdir()) == []
        progress = _build(
            root,
            tmp_path,
            f"FROM {image}\nCOPY Dockerfile /d\n",
            "-o",
            f"type=local,dest={tmp_path}/out",
            progress="rawjson",
        )
    times = _status_times(progress)
    download, extraction = times[_digest(layer)], times[f"extracting {_digest(layer)}"]
    assert extraction[0] < download[1], (extraction, download)
    assert (tmp_path / "out" / "data/large.bin").read_bytes() == large


def test_a_layer_unpacked_while_it_downloads_counts_only_once_its_blob_is_verified(
    tmp_path: Path,
) -> None:
    """A blob the registry alters (a valid layer, with other files) is unpacked as it comes
    and then refused for its digest: the files unpacked are not the layer's, nothing is left
    of them, and the next build, with the right blob served, has the layer's own files."""
    large = os.urandom(LARGE)

    def stored(data: bytes) -> bytes:  # gzip's stored blocks: the same size for the same tar
        return gzip.compress(layer_tar({"data/": None, "data/large.bin": data}, gzipped=False), 0)

    layer, altered = stored(large), stored(os.urandom(LARGE))
    assert len(altered) == len(layer)  # refused for its digest, not its size
    hexdigest = _digest(layer).split(":")[1]
    with LocalRegistry(tmp_path / "registry") as running:
        push_image(running.host, "lib/large:1", [BASE[0], layer])
        served = running.root / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2]
        served = served / hexdigest / "data"
        root, image = tmp_path / "root", f"{running.host}/lib/large:1"
        _build(root, tmp_path, f"FROM {image}\nLABEL a=b\n")  # resolved, not pulled
        served.write_bytes(altered)
        reads = f"FROM {image}\nCOPY Dockerfile /d\n"
        failed = _attempt(root, tmp_path, reads, "-o", f"type=local,dest={tmp_path}/bad")
        assert failed.returncode == 1, failed.stderr
        assert "does not match its digest" in failed.stderr.splitlines()[-1], failed.stderr
        assert not (tmp_path / "bad").exists()
        assert list(root.glob("tmp/**/large.bin")) == []  # the unpacked files are gone
        assert list(root.glob("layers/*/data/large.bin")) == []
        served.write_bytes(layer)
        _build(root, tmp_path, reads, "-o", f"type=local,dest={tmp_path}/out")
    assert (tmp_path / "out" / "data/large.bin").read_bytes() == large


def _blob_files(root: Path) -> dict[str, int]:
    """Every blob file the root holds: the store's and any plugin's, by path."""
    found = {}
    for folder in [root / "content", *root.glob("plugins/*/*/blobs")]:
        found.update({str(p): p.stat().st_size for p in folder.rglob("*") if p.is_file()})
    return found


def _du_total(root: Path) -> float:
    argv = [sys.executable, "-m", "llbkit.core", "--root", str(root), "du"]
    last = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    number, unit = re.fullmatch(r"Total:\s+([\d.]+)(\w+)", last).groups()  # type: ignore[union-attr]
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_prune_all_frees_the_blobs_pulled_and_exported_and_du_counts_them(
    tmp_path: Path, registry: str
) -> None:
    """As BuildKit sizes a record with its blobs and frees them with it: ``du`` counts the
    pulled layers' blobs and an export's, and ``prune --all`` leaves none in the root (none
    kept beside the store either); the next build pulls the image again."""
    root = tmp_path / "root"
    dockerfile = f"FROM {registry}/lib/app:1\nCOPY Dockerfile /d\n"
    _build(root, tmp_path, dockerfile, "--output", f"type=oci,dest={tmp_path}/out.tar")
    blobs = _blob_files(root)
    assert len(blobs) >= 4, blobs  # three pulled, one exported (kept beside its layer)
    assert _du_total(root) >= sum(blobs.values())
    argv = [sys.executable, "-m", "llbkit.core", "--root", str(root), "prune", "--all"]
    subprocess.run(argv, capture_output=True, check=True)
    assert _blob_files(root) == {}
    again = _build(root, tmp_path, dockerfile)
    assert sorted(_extracted(again)) == sorted(_digest(b) for b in [*BASE, TOP])
