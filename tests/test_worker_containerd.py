"""The containerd worker chosen by buildkitd.toml runs a build as the OCI worker does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.sdk.testing.containerd import Containerd, containerd  # noqa: F401 - a fixture
from tests.trees.listing import tar_listing

pytestmark = [pytest.mark.root, pytest.mark.services]

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ENV GREETING=hello
WORKDIR /work
COPY a.txt .
RUN echo "$GREETING $(cat a.txt)" > greeting && mkdir -p /home/builder && chown 1000 /home/builder
RUN mkdir /kept
RUN --mount=type=tmpfs,target=/made/for/mount --mount=type=tmpfs,target=/kept/m true
USER 1000
RUN --mount=type=cache,target=/home/builder/cache,uid=1000 id -u > /home/builder/uid
RUN --mount=type=secret,id=tok,uid=1000 wc -c < /run/secrets/tok > /home/builder/secret-size
"""


def _llbkit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llbkit.core", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_containerd_worker_picked_by_config_builds_what_the_oci_worker_builds(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("world\n")
    (tmp_path / "tok").write_text("twelve chars")
    config = tmp_path / "buildkitd.toml"
    config.write_text(
        "[worker.oci]\n  enabled = false\n"
        f'[worker.containerd]\n  enabled = true\n  address = "{containerd.address}"\n'
        f'  namespace = "{containerd.namespace}"\n  labels = {{ team = "build" }}\n'
    )
    workers = _llbkit(tmp_path / "c", "--config", str(config), "debug", "workers", "-v")
    assert workers.returncode == 0, workers.stderr
    assert "org.mobyproject.buildkit.worker.executor:\tcontainerd" in workers.stdout
    assert "team:\tbuild" in workers.stdout
    # As BuildKit: the containerd server's UUID (what its introspection service keeps).
    uuid_file = Path(containerd.address).parent / "root/io.containerd.grpc.v1.introspection/uuid"
    uuid = f"org.mobyproject.buildkit.worker.containerd.uuid:\t{uuid_file.read_text().strip()}"
    assert uuid in workers.stdout

    build = ["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
    build += ["--local", f"dockerfile={ctx}", "--opt", f"build-arg:BASE={busybox_image}"]
    build += ["--secret", f"id=tok,src={tmp_path / 'tok'}"]
    trees = {}
    for name, extra in (("oci", []), ("containerd", ["--config", str(config)])):
        out = tmp_path / f"{name}.tar"
        done = _llbkit(tmp_path / name, *extra, *build, "--output", f"type=tar,dest={out}")
        assert done.returncode == 0, done.stderr
        trees[name] = tar_listing(out.read_bytes())
    assert trees["containerd"] == trees["oci"]
    tree = trees["oci"]
    assert {"home/builder/secret-size", "home/builder/uid", "work/greeting"} <= tree.keys()
    assert tree["home/builder/uid"]["uid"] == 1000
    # a mount point's missing parents go with it; a directory that was there stays
    assert not any(path.startswith("made") for path in tree) and "kept" in tree
    assert containerd.ctr("containers", "ls", "-q").stdout.split() == []


def test_an_unreachable_containerd_fails_the_build_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "buildkitd.toml"
    sock = tmp_path / "no.sock"
    config.write_text(
        f'[worker.oci]\nenabled = false\n[worker.containerd]\naddress = "unix://{sock}"\n'
    )
    done = _llbkit(tmp_path / "root", "--config", str(config), "debug", "workers")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: containerd at {sock} is not reachable")
    assert done.stderr.count("\n") == 1


def test_llbkitd_takes_buildkitds_worker_flags(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    from tests.test_daemon import _dockerfile_args, client, daemon

    flags = ["--oci-worker", "false", "--containerd-worker", "true"]
    flags += ["--containerd-worker-addr", f"unix://{containerd.address}"]
    flags += ["--containerd-worker-namespace", containerd.namespace]
    with daemon(tmp_path / "root", *flags) as (address, _):
        workers = client(address, "debug", "workers", "-v")
        assert workers.returncode == 0, workers.stderr
        shown = workers.stdout.decode()
        assert "org.mobyproject.buildkit.worker.executor:\tcontainerd" in shown
        namespace = f"org.mobyproject.buildkit.worker.containerd.namespace:\t{containerd.namespace}"
        assert namespace in shown
        host = busybox_image.removesuffix("/library/busybox")
        args = _dockerfile_args(tmp_path / "ctx", host, run="echo ran-in-containerd > /ran")
        built = client(address, *args, "--output", f"type=local,dest={tmp_path / 'out'}")
        assert built.returncode == 0, built.stderr
        assert (tmp_path / "out" / "ran").read_text() == "ran-in-containerd\n"


def test_an_image_built_with_the_containerd_worker_runs_with_ctr_without_a_push(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """``type=image`` stores into containerd (BuildKit's store=true); containerd's garbage
    collection, once the export's lease is gone, keeps every blob the image needs."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nRUN echo built-by-llbkit > /hello\nCMD ["cat", "/hello"]\n'
    )
    config = tmp_path / "buildkitd.toml"
    config.write_text(
        f'[worker.oci]\nenabled = false\n[worker.containerd]\naddress = "{containerd.address}"\n'
        f'namespace = "{containerd.namespace}"\n'
    )
    build = ["--config", str(config), "build", "--frontend", "dockerfile.v0"]
    build += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    build += ["--opt", f"build-arg:BASE={busybox_image}", "--progress", "plain"]
    done = _llbkit(tmp_path / "root", *build, "--output", "type=image,name=example/app:1")
    assert done.returncode == 0, done.stderr
    assert "naming to docker.io/example/app:1 done" in done.stderr
    listed = containerd.ctr("images", "ls", "-q").stdout.split()
    assert "docker.io/example/app:1" in listed
    # The export's lease gone and the collector run: the image keeps what it needs.
    for lease in containerd.ctr("leases", "ls", "-q").stdout.split():
        containerd.ctr("leases", "rm", lease)
    containerd.ctr("images", "tag", "docker.io/example/app:1", "docker.io/example/gone:1")
    assert containerd.ctr("images", "rm", "--sync", "docker.io/example/gone:1").returncode == 0
    ran = containerd.ctr("run", "--rm", "docker.io/example/app:1", f"t-{tmp_path.name}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "built-by-llbkit\n"
    # store=false leaves containerd alone.
    again = _llbkit(
        tmp_path / "root", *build, "--output", "type=image,name=example/other:1,store=false"
    )
    assert again.returncode == 0, again.stderr
    assert "docker.io/example/other:1" not in containerd.ctr("images", "ls", "-q").stdout


def test_a_killed_engine_leaves_no_container_task_lease_or_snapshot(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """kill -9 of llbkit during a RUN, then a rebuild: containerd holds nothing of it."""
    import os
    import signal
    import time

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN sleep 600\n")
    config = tmp_path / "buildkitd.toml"
    config.write_text(
        f'[worker.oci]\nenabled = false\n[worker.containerd]\naddress = "{containerd.address}"\n'
        f'namespace = "{containerd.namespace}"\n'
    )
    build = [sys.executable, "-m", "llbkit.core", "--root", str(tmp_path / "root")]
    build += ["--config", str(config), "build", "--frontend", "dockerfile.v0"]
    build += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    build += ["--opt", f"build-arg:BASE={busybox_image}"]

    def held() -> tuple[list[str], ...]:
        return tuple(
            containerd.ctr(*what).stdout.strip().splitlines()
            for what in (
                ("leases", "ls", "-q"),
                ("snapshots", "--snapshotter", "overlayfs", "ls"),
                ("snapshots", "--snapshotter", "native", "ls"),
            )
        )

    before = held()
    proc = subprocess.Popen(build, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while "RUNNING" not in containerd.ctr("tasks", "ls").stdout:
        assert time.monotonic() < deadline and proc.poll() is None, "the step never ran"
        time.sleep(0.1)
    assert held()[0] != before[0]  # the base image it uses is held under its lease
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert containerd.ctr("containers", "ls", "-q").stdout.split()  # left behind, for now
    assert held()[0] != before[0]  # and its lease

    (ctx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN true\n")
    again = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert containerd.ctr("containers", "ls", "-q").stdout.split() == []
    assert "RUNNING" not in containerd.ctr("tasks", "ls").stdout
    assert held() == before  # no lease or snapshot of its own, then or now


def test_with_both_workers_enabled_both_are_listed_and_the_oci_worker_builds(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """As buildkitd with both workers: the OCI worker first (the default, which runs
    builds), then the containerd worker, each with its labels; through llbkitd too."""
    import hashlib

    from llbkit.sdk.testing.registry import busybox_layer, layer_tar, push_image
    from tests.test_daemon import client, daemon

    config = tmp_path / "buildkitd.toml"
    config.write_text(
        '[worker.oci]\n  enabled = true\n  labels = { who = "oci" }\n'
        f'[worker.containerd]\n  enabled = true\n  address = "{containerd.address}"\n'
        f'  namespace = "{containerd.namespace}"\n  labels = {{ who = "containerd" }}\n'
    )
    listed = _llbkit(tmp_path / "root", "--config", str(config), "debug", "workers")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 3  # the header and both workers
    verbose = _llbkit(tmp_path / "root", "--config", str(config), "debug", "workers", "-v")
    assert verbose.returncode == 0, verbose.stderr
    blocks = verbose.stdout.split("\n\n")
    assert len(blocks) == 3 and blocks[2] == ""  # each block ends with a blank line
    assert "executor:\toci" in blocks[0] and "who:\toci" in blocks[0]
    assert "executor:\tcontainerd" in blocks[1] and "who:\tcontainerd" in blocks[1]
    ids = [line.split("\t")[1] for line in verbose.stdout.splitlines() if line.startswith("ID:")]
    assert ids == [row.split()[0] for row in listed.stdout.splitlines()[1:]]

    # The build runs on the default: containerd gets none of the base image it pulls.
    host = busybox_image.split("/", 1)[0]
    own = layer_tar({"own": tmp_path.name.encode()})
    push_image(host, "library/busybox-both:latest", [busybox_layer(), own])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {host}/library/busybox-both\nRUN echo ran > /ran\n")
    out = tmp_path / "out"
    build = ["--config", str(config), "build", "--frontend", "dockerfile.v0"]
    build += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    done = _llbkit(tmp_path / "root", *build, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "ran").read_text() == "ran\n"
    blobs = containerd.ctr("content", "ls", "-q").stdout.split()
    assert "sha256:" + hashlib.sha256(own).hexdigest() not in blobs

    flags = ["--oci-worker", "true", "--containerd-worker", "true"]
    flags += ["--containerd-worker-addr", f"unix://{containerd.address}"]
    flags += ["--containerd-worker-namespace", containerd.namespace]
    with daemon(tmp_path / "daemon-root", *flags) as (address, _):
        shown = client(address, "debug", "workers", "-v")
        assert shown.returncode == 0, shown.stderr
        executors = [
            line.split("\t")[-1]
            for line in shown.stdout.decode().splitlines()
            if "worker.executor:" in line
        ]
        assert executors == ["oci", "containerd"]


def test_unpack_true_leaves_the_image_unpacked_in_containerds_snapshotter(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """``unpack=true``: every layer is a committed snapshot named by its chain ID and the
    config holds the top one for containerd's collector; ``ctr run`` runs it."""
    import json

    from llbkit.plugins.worker_containerd.unpack import chain_ids

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nRUN echo unpacked-by-llbkit > /hello\nCMD ["cat", "/hello"]\n'
    )
    config = tmp_path / "buildkitd.toml"
    config.write_text(
        f'[worker.oci]\nenabled = false\n[worker.containerd]\naddress = "{containerd.address}"\n'
        f'namespace = "{containerd.namespace}"\nsnapshotter = "overlayfs"\n'
    )
    build = ["--config", str(config), "build", "--frontend", "dockerfile.v0"]
    build += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}"]
    build += ["--opt", f"build-arg:BASE={busybox_image}", "--progress", "plain"]
    name = "docker.io/example/unpacked:1"
    done = _llbkit(tmp_path / "root", *build, "--output", f"type=image,name={name},unpack=true")
    assert done.returncode == 0, done.stderr
    assert "has no effect" not in done.stderr

    manifest = json.loads(containerd.ctr("content", "get", _target(containerd, name)).stdout)
    image_config = json.loads(containerd.ctr("content", "get", manifest["config"]["digest"]).stdout)
    chains = chain_ids(image_config["rootfs"]["diff_ids"])
    snapshots = containerd.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert all(chain in snapshots for chain in chains)
    labels = containerd.ctr("content", "ls").stdout
    assert f"containerd.io/gc.ref.snapshot.overlayfs={chains[-1]}" in labels
    # No lease left; the collector keeps the snapshots the image's config names.
    assert containerd.ctr("leases", "ls", "-q").stdout.split() == []
    containerd.ctr("images", "tag", name, "docker.io/example/gone:2")
    containerd.ctr("images", "rm", "--sync", "docker.io/example/gone:2")
    snapshots = containerd.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout
    assert all(chain in snapshots for chain in chains)
    committed = _committed(containerd)
    ran = containerd.ctr("run", "--rm", name, f"u-{tmp_path.name}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "unpacked-by-llbkit\n"
    assert _committed(containerd) == committed  # ctr found it unpacked: it unpacked nothing


def _committed(server: Containerd) -> set[str]:
    """The committed overlayfs snapshots (``ctr snapshots ls``: KEY PARENT KIND)."""
    listed = server.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout.splitlines()
    return {line.split()[0] for line in listed[1:] if line.split()[-1] == "Committed"}


def _target(server: Containerd, name: str) -> str:
    """The manifest digest image ``name`` names (``ctr images ls``: REF TYPE DIGEST ...)."""
    for line in server.ctr("images", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields[0] == name:
            return fields[2]
    raise AssertionError(f"no image {name}")


def test_a_second_worker_that_cannot_start_is_left_out_unless_enabled_outright(
    tmp_path: Path,
) -> None:
    """buildkitd's ``auto``: a containerd section without ``enabled`` beside the OCI worker is
    listed only when containerd answers; ``enabled = true`` makes its absence the error."""
    sock = tmp_path / "no.sock"
    config = tmp_path / "buildkitd.toml"
    config.write_text(f'[worker.containerd]\naddress = "unix://{sock}"\n')
    listed = _llbkit(tmp_path / "root", "--config", str(config), "debug", "workers", "-v")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("ID:") == 1
    assert "executor:\toci" in listed.stdout
    config.write_text(f'[worker.containerd]\nenabled = true\naddress = "unix://{sock}"\n')
    refused = _llbkit(tmp_path / "root", "--config", str(config), "debug", "workers")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: containerd at {sock} is not reachable")
    assert refused.stderr.count("\n") == 1


def test_two_unpacks_of_images_sharing_layers_at_once_both_succeed(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both find a layer's snapshot missing and unpack it; the second commit finds it made
    (made certain here: every unpack is told the snapshot is missing)."""
    import anyio
    import grpc

    from llbkit.plugins.worker_containerd import unpack
    from llbkit.plugins.worker_containerd.store import ContainerdImageStore

    pulled = containerd.ctr(
        "images", "pull", "--plain-http", "--snapshotter", "native", f"{busybox_image}:latest"
    )
    assert pulled.returncode == 0, pulled.stderr
    manifest = _target(containerd, f"{busybox_image}:latest")

    async def missing(self: object, name: str) -> bool:
        return False

    monkeypatch.setattr(unpack._Snapshots, "exists", missing)

    async def scenario() -> None:
        channel = grpc.aio.insecure_channel(f"unix://{containerd.address}")
        store = ContainerdImageStore(channel, containerd.address, containerd.namespace)
        try:
            await store.unpack(manifest)
            await store.unpack(manifest)
        finally:
            await store.release()
            await channel.close()

    anyio.run(scenario)
    assert "Active" not in containerd.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout
