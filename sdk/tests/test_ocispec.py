"""The OCI runtime spec both workers run a step from (llbkit.sdk.ocispec): the ids, the
defaults BuildKit gives a step, network and security modes, terminal and exec processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.plugins.context import DNSConfig
from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.sdk.ocispec import Sandbox, build_process, build_spec, resolv_conf


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nbob:x:1000:\nwheel:x:10:bob\ndocker:x:999:alice,bob\n")
    return tmp_path / "rootfs"


def test_spec_runs_as_the_ids_the_engine_resolved(rootfs: Path, tmp_path: Path) -> None:
    # The user's name is for messages: the ids are used as given, whatever /etc/passwd says.
    process = ProcessSpec(["true"], user="bob", uid=4242, gid=4343, additional_gids=(4343, 10))
    spec = build_spec(process, rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r")
    assert spec["process"]["user"] == {"uid": 4242, "gid": 4343, "additionalGids": [4343, 10]}
    root = build_spec(
        ProcessSpec(["true"]), rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r"
    )
    assert root["process"]["user"] == {"uid": 0, "gid": 0}


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


def test_tty_and_exec_processes(rootfs: Path, tmp_path: Path) -> None:
    process = ProcessSpec(
        ["sh"], env=["A=1"], cwd="/tmp", uid=7, gid=8, tty=True, ulimits=[("nofile", 10, 20)]
    )
    spec = build_spec(process, rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r")
    assert spec["process"]["terminal"] is True
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]
    # runc exec's process.json is the spec's process, so both processes are set up alike.
    assert build_process(process) == spec["process"]
    assert build_process(ProcessSpec(["true"]))["terminal"] is False


HOST = "nameserver 10.255.255.53\n"
FALLBACK = (
    "\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    "nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844"
)


@pytest.mark.parametrize(
    ("host", "dns", "expected"),
    [
        # What BuildKit v0.11.6 wrote for a RUN with each [dns] beside this host file.
        (HOST, None, HOST),
        (
            HOST,
            DNSConfig(("1.1.1.1", "9.9.9.9"), ("ndots:2", "edns0"), ("example.test",)),
            "search example.test\nnameserver 1.1.1.1\nnameserver 9.9.9.9\noptions ndots:2 edns0\n",
        ),
        (HOST, DNSConfig(options=("ndots:3",)), HOST + "options ndots:3\n"),
        (HOST, DNSConfig(search_domains=(".",)), HOST),
        (HOST, DNSConfig(), HOST),
        (HOST, DNSConfig(("127.0.0.53",)), FALLBACK),
        (
            HOST,
            DNSConfig(("::1", "127.0.0.1", "10.0.0.2"), search_domains=("a.test", "b.test")),
            "search a.test b.test\nnameserver 10.0.0.2\n",
        ),
        # systemd-resolved's stub: the servers it forwards to are read instead (none here)
        ("search corp.example\nnameserver 127.0.0.53  # c", None, FALLBACK),
        ("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", None, FALLBACK),
        # a loopback nameserver beside another is only left out
        ("nameserver 127.0.0.53\nnameserver 10.1.1.1\n", None, "nameserver 10.1.1.1\n"),
        (
            "# none\nsearch x.test\nnameserver 192.0.2.1 # a comment\n",
            DNSConfig(),
            ("search x.test\nnameserver 192.0.2.1\n"),
        ),
    ],
)
def test_resolv_conf_as_buildkit_writes_it(
    tmp_path: Path, host: str, dns: DNSConfig | None, expected: str
) -> None:
    (tmp_path / "resolv.conf").write_text(host)
    missing = tmp_path / "run-systemd-resolve.conf"
    assert resolv_conf("sandbox", tmp_path / "resolv.conf", dns, resolved_file=missing) == expected


def test_behind_systemd_resolved_the_servers_it_forwards_to_are_used(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 10.2.3.4\nsearch corp.test\n")
    for network in ("sandbox", "host"):
        got = resolv_conf(network, tmp_path / "resolv.conf", resolved_file=upstream)
        assert got == "nameserver 10.2.3.4\nsearch corp.test\n"
    dns = DNSConfig(options=("ndots:1",))
    with_dns = resolv_conf("sandbox", tmp_path / "resolv.conf", dns, resolved_file=upstream)
    assert with_dns == "search corp.test\nnameserver 10.2.3.4\noptions ndots:1\n"


def test_resolv_conf_of_the_host_network_keeps_loopback_nameservers(tmp_path: Path) -> None:
    missing = tmp_path / "run-systemd-resolve.conf"
    for host in ("nameserver 127.0.0.1\n", "nameserver 127.0.0.53\n"):  # the stub, reachable
        (tmp_path / "resolv.conf").write_text(host)
        assert resolv_conf("host", tmp_path / "resolv.conf", resolved_file=missing) == host
    dns = DNSConfig(("127.0.0.1",))
    with_dns = resolv_conf("host", tmp_path / "resolv.conf", dns, resolved_file=missing)
    assert with_dns == "nameserver 127.0.0.1\n"


def test_sandbox_is_filtered_as_buildkit_filters_it(rootfs: Path, tmp_path: Path) -> None:
    """A sandboxed step gets BuildKit's seccomp filter (recorded from BuildKit v0.11.6's
    ``config.json`` on amd64, Linux 6); an insecure step gets none."""
    from llbkit.sdk import seccomp
    from llbkit.sdk.ocispec import CAPABILITIES

    recorded = json.loads((Path(__file__).parent / "vectors" / "seccomp-amd64.json").read_text())
    assert seccomp.default_profile(CAPABILITIES, arch="amd64", kernel=(6, 1)) == recorded
    spec = build_spec(
        ProcessSpec(["true"]), rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r"
    )
    assert ("seccomp" in spec["linux"]) == seccomp.supported()
    insecure = build_spec(
        ProcessSpec(["true"], security="insecure"),
        rootfs,
        [],
        hosts=tmp_path / "h",
        resolv=tmp_path / "r",
    )
    assert "seccomp" not in insecure["linux"]


def test_filter_follows_capabilities_arch_and_kernel() -> None:
    from llbkit.sdk.seccomp import default_profile

    def allowed(profile: dict[str, Any]) -> set[str]:
        return {
            name
            for call in profile["syscalls"]
            if call["action"] == "SCMP_ACT_ALLOW" and "args" not in call
            for name in call["names"]
        }

    plain = default_profile(["CAP_CHOWN"], arch="amd64", kernel=(6, 1))
    assert not {"unshare", "mount", "chroot", "clone3"} & allowed(plain)
    assert {"arch_prctl", "ptrace"} <= allowed(plain)
    admin = default_profile(["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"], arch="amd64", kernel=(6, 1))
    assert {"unshare", "mount", "clone", "clone3", "chroot"} <= allowed(admin)
    assert all(call.get("errnoRet") != 38 for call in admin["syscalls"])
    old = default_profile([], arch="arm64", kernel=(4, 4))
    assert "ptrace" not in allowed(old)
    assert "arch_prctl" not in allowed(old)
    assert old["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


@pytest.mark.parametrize(
    ("parent", "path"),
    [
        ("", "/buildkit/c1"),
        ("mine", "/mine/buildkit/c1"),
        ("/a/b/", "/a/b/buildkit/c1"),
        ("system.slice:llbkit:", "system.slice:llbkit:c1"),
    ],
)
def test_cgroups_path(parent: str, path: str, rootfs: Path, tmp_path: Path) -> None:
    """Where BuildKit puts a step's cgroup: under ``buildkit``, in the step's parent if it
    names one, or in a systemd slice."""
    process = ProcessSpec(["true"], cgroup_parent=parent)
    spec = build_spec(process, rootfs, [], hosts=tmp_path / "h", resolv=tmp_path / "r", id="c1")
    assert spec["linux"]["cgroupsPath"] == path


def test_the_workers_cgroup_parent_unless_the_steps(rootfs: Path, tmp_path: Path) -> None:
    """``defaultCgroupParent`` places every step's cgroup; a step's own parent wins."""

    def path(process: ProcessSpec) -> str:
        spec = build_spec(
            process,
            rootfs,
            [],
            hosts=tmp_path / "h",
            resolv=tmp_path / "r",
            id="c1",
            sandbox=Sandbox(cgroup_parent="ci"),
        )
        return str(spec["linux"]["cgroupsPath"])

    assert path(ProcessSpec(["true"])) == "/ci/buildkit/c1"
    assert path(ProcessSpec(["true"], cgroup_parent="mine")) == "/mine/buildkit/c1"
