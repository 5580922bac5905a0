"""The OCI worker: its config, the spec it writes, users as BuildKit resolves them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from llbkit.core.errors import UnknownOptionError, UserError
from llbkit.core.ops.users import resolve_user
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.plugins.worker_runc.spec import build_spec
from llbkit.plugins.worker_runc.worker import RuncWorker
from llbkit.sdk.testing import make_context


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nbob:x:1000:\nwheel:x:10:bob\ndocker:x:999:alice,bob\n")
    return tmp_path / "rootfs"


def test_users_by_name_number_and_group(rootfs: Path) -> None:
    assert resolve_user(rootfs, "") == (0, 0, [])
    assert resolve_user(rootfs, "bob") == (1000, 1000, [1000, 10, 999])
    assert resolve_user(rootfs, "1000") == (1000, 1000, [1000, 10, 999])
    assert resolve_user(rootfs, "bob:wheel") == (1000, 10, [10])
    assert resolve_user(rootfs, "4242:4343") == (4242, 4343, [4343])
    with pytest.raises(UserError, match="unable to find user carol"):
        resolve_user(rootfs, "carol")
    with pytest.raises(UserError, match="unable to find group nogroup"):
        resolve_user(rootfs, "bob:nogroup")


def test_spec_defaults(rootfs: Path, tmp_path: Path) -> None:
    spec = build_spec(
        ProcessSpec(
            args=["/bin/sh", "-c", "true"],
            user="bob",
            uid=1000,
            gid=1000,
            additional_gids=(1000, 10, 999),
            cwd="/work",
        ),
        rootfs,
        [MountSpec("/cache", "bind", tmp_path), MountSpec("/t", "tmpfs", options={"size": "1024"})],
        hosts=tmp_path / "hosts",
        resolv=tmp_path / "resolv.conf",
    )
    process = spec["process"]
    assert process["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 999]}
    assert process["capabilities"]["bounding"] == [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    assert spec["hostname"] == "buildkitsandbox"
    kinds = {m["destination"]: m["type"] for m in spec["mounts"]}
    assert kinds["/proc"] == "proc" and kinds["/sys"] == "sysfs" and kinds["/t"] == "tmpfs"
    assert kinds["/etc/hosts"] == "bind" and kinds["/cache"] == "bind"
    namespaces = {n["type"] for n in spec["linux"]["namespaces"]}
    assert namespaces == {"pid", "ipc", "uts", "mount"}  # host network without CNI


def test_network_none_and_insecure(rootfs: Path, tmp_path: Path) -> None:
    spec = build_spec(
        ProcessSpec(args=["true"], network="none", security="insecure"),
        rootfs,
        [],
        hosts=tmp_path / "h",
        resolv=tmp_path / "r",
    )
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    assert "ro" not in next(m for m in spec["mounts"] if m["destination"] == "/sys")["options"]


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    worker = RuncWorker(make_context("oci", state_dir=tmp_path))
    with pytest.raises(UnknownOptionError, match="colour"):
        anyio.run(worker.resolve, {"colour": "red"})


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    worker = RuncWorker(make_context("oci", state_dir=tmp_path))
    with pytest.raises(UserError, match="apt-get install runc"):
        anyio.run(worker.resolve, {"binary": "runc-that-is-not-there"})
