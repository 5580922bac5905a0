"""With the containerd worker, base images come from containerd's image store when it has them,
and what a build pulls lands there under a lease that containerd's garbage collector honours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.core.config import EngineConfig
from llbkit.core.control import Controller
from llbkit.sdk import llb
from llbkit.sdk.testing.builds import run_build
from llbkit.sdk.testing.containerd import Containerd, containerd  # noqa: F401 - a fixture

pytestmark = [pytest.mark.root, pytest.mark.services]

#: a registry that is never there (nothing listens on the discard port)
NOWHERE = "127.0.0.1:9/library/busybox:latest"


def _config(server: Containerd) -> EngineConfig:
    return EngineConfig(
        worker_name="containerd",
        worker={"address": server.address, "namespace": server.namespace},
    )


def _pulled(server: Containerd, image: str, name: str) -> None:
    """``ctr pull`` ``image`` and name it ``name`` too."""
    pulled = server.ctr("images", "pull", "--plain-http", f"{image}:latest")
    assert pulled.returncode == 0, pulled.stderr
    tagged = server.ctr("images", "tag", "--force", f"{image}:latest", name)
    assert tagged.returncode == 0, tagged.stderr


def _collect(server: Containerd) -> None:
    """Make containerd's garbage collector run now (a synchronous delete triggers it)."""
    done = server.ctr("leases", "create")
    lease = done.stdout.split()[0] if done.returncode == 0 else ""
    if lease:
        server.ctr("leases", "rm", "--sync", lease)


def _blobs(server: Containerd) -> set[str]:
    lines = server.ctr("content", "ls", "-q").stdout.split()
    return {line for line in lines if line.startswith("sha256:")}


def _build(server: Containerd, root: Path, state: llb.State, out: Path) -> None:
    definition = state.marshal(llb.Platform("linux", "amd64")).to_bytes()

    async def build(engine: Controller) -> None:
        exports = [("local", {"dest": str(out)})]
        await run_build(engine, EmbeddedClient(), definition=definition, exports=exports)
        await engine.stop_worker()

    with Controller.open(root, _config(server)) as engine:
        anyio.run(build, engine)


@pytest.mark.parametrize("mode", ["default", "local"])
def test_an_image_in_containerds_store_is_used_with_no_registry_reachable(
    mode: str,
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    name = NOWHERE.replace("busybox", f"busybox-{mode}")
    _pulled(containerd, busybox_image, name)
    base = llb.image(name, resolve_mode=None if mode == "default" else mode)
    state = base.run(
        shell="echo from-containerd > /out/ran", mounts=[llb.Bind("/out", llb.scratch())]
    )
    _build(containerd, tmp_path / "root", state.get_mount("/out"), tmp_path / "out")
    assert (tmp_path / "out" / "ran").read_text() == "from-containerd\n"
    assert containerd.ctr("leases", "ls", "-q").stdout.split() == []  # released at the end


def test_a_dockerfile_from_an_imported_image_builds_without_a_registry(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """``ctr import`` an image, then ``FROM`` it by a name no registry answers for."""
    _pulled(containerd, busybox_image, "docker.io/library/exported:1")
    archive = tmp_path / "busybox.tar"
    exported = containerd.ctr("images", "export", str(archive), "docker.io/library/exported:1")
    assert exported.returncode == 0, exported.stderr
    for image in ("docker.io/library/exported:1", f"{busybox_image}:latest"):
        containerd.ctr("images", "rm", "--sync", image)
    imported = containerd.ctr("images", "import", str(archive))
    assert imported.returncode == 0, imported.stderr
    name = "127.0.0.1:9/imported/busybox:1"
    tagged = containerd.ctr("images", "tag", "docker.io/library/exported:1", name)
    assert tagged.returncode == 0, tagged.stderr
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nRUN echo imported > /ran\n")
    config = tmp_path / "buildkitd.toml"
    config.write_text(
        f'[worker.oci]\nenabled = false\n[worker.containerd]\naddress = "{containerd.address}"\n'
        f'namespace = "{containerd.namespace}"\n'
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "llbkit.core", "--root", str(tmp_path / "root")),
            *("--config", str(config), "build", "--frontend", "dockerfile.v0"),
            *("--local", f"context={ctx}", "--local", f"dockerfile={ctx}"),
            *("--output", f"type=local,dest={out}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "ran").read_text() == "imported\n"


def test_a_pulled_base_image_is_held_in_containerd_while_the_build_runs(
    containerd: Containerd,  # noqa: F811
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """The blobs a build pulls land in containerd's content store under the engine's lease:
    the collector, run while a step runs, keeps them; the engine's lease ends with it."""
    import hashlib

    # An image with a layer of its own, which the build pulls.
    from llbkit.sdk.testing.registry import busybox_layer, layer_tar, push_image

    host = busybox_image.split("/", 1)[0]
    own = layer_tar({"own": tmp_path.name.encode()})
    push_image(host, "library/busybox-gc:latest", [busybox_layer(), own])
    own_digest = "sha256:" + hashlib.sha256(own).hexdigest()
    before = _blobs(containerd)
    seen: dict[str, set[str]] = {}

    def during() -> None:
        import time

        deadline = time.monotonic() + 60
        while "RUNNING" not in containerd.ctr("tasks", "ls").stdout:
            assert time.monotonic() < deadline, "the step never ran"
            time.sleep(0.05)
        _collect(containerd)
        seen["during"] = _blobs(containerd)
        seen["leases"] = set(containerd.ctr("leases", "ls", "-q").stdout.split())

    state = llb.image(f"{host}/library/busybox-gc").run(
        shell="sleep 2; echo held > /out/ran", mounts=[llb.Bind("/out", llb.scratch())]
    )
    import threading

    watcher = threading.Thread(target=during)
    watcher.start()
    _build(containerd, tmp_path / "root", state.get_mount("/out"), tmp_path / "out")
    watcher.join()
    assert (tmp_path / "out" / "ran").read_text() == "held\n"
    assert own_digest not in before
    assert own_digest in seen["during"], "the pulled layer is not in containerd, or not held"
    assert seen["leases"], "the build held no lease"
    assert containerd.ctr("leases", "ls", "-q").stdout.split() == []


def test_one_blob_written_twice_at_once_lands_once_and_held(containerd: Containerd) -> None:  # noqa: F811
    import hashlib

    import grpc

    from llbkit.plugins.worker_containerd.store import ContainerdImageStore

    data = b"a blob two builds write at once\n" * 50_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    absent = "sha256:" + "1" * 64

    async def chunks() -> object:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]
            await anyio.sleep(0)

    async def scenario() -> tuple[bool, bool]:
        channel = grpc.aio.insecure_channel(f"unix://{containerd.address}")
        store = ContainerdImageStore(channel, containerd.address, containerd.namespace)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(
                        lambda: store.write_blob(
                            digest, chunks(), size=len(data), media_type="application/octet-stream"
                        )
                    )
            _collect(containerd)  # what the lease holds stays
            there = digest in _blobs(containerd)
            return there, await store.hold_blob(absent)
        finally:
            await store.release()
            await channel.close()

    assert anyio.run(scenario) == (True, False)
