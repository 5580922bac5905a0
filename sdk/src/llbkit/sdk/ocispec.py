"""The OCI runtime spec of one exec step, as BuildKit's workers write it, for every worker.

The runc worker writes it as a bundle's ``config.json``, the containerd worker hands it to
containerd; both run an exec step the same way. The user arrives resolved (``uid``, ``gid``,
``additional_gids``): the engine reads the rootfs's ``/etc/passwd`` and ``/etc/group``, so every
worker runs a named user as the same ids. Also ``/etc/hosts`` and ``/etc/resolv.conf`` as a step
sees them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llbkit.core.plugins.worker import MountSpec, ProcessSpec
from llbkit.sdk import seccomp
from llbkit.sdk.workerconfig import Sandbox

if TYPE_CHECKING:
    from llbkit.core.plugins.context import DNSConfig

__all__ = [
    "DEFAULT_PATH",
    "Sandbox",
    "build_process",
    "build_spec",
    "cgroups_path",
    "hosts_file",
    "resolv_conf",
]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: containerd's default capability set, which BuildKit's sandboxed processes get
CAPABILITIES = [
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
_MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_RLIMITS = {
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
    "as": "RLIMIT_AS",
}


def _device_rules(*, insecure: bool) -> list[dict[str, Any]]:
    """The device cgroup: nothing beyond the default nodes, or every character and block
    device for an insecure step."""
    if not insecure:
        return [{"allow": False, "access": "rwm"}]
    return [{"allow": True, "type": kind, "access": "rwm"} for kind in ("c", "b")]


def build_spec(
    process: ProcessSpec,
    rootfs: Path,
    mounts: Sequence[MountSpec],
    *,
    hosts: Path,
    resolv: Path,
    id: str = "",
    sandbox: Sandbox | None = None,
) -> dict[str, Any]:
    """The ``config.json`` for ``runc run`` of container ``id``."""
    insecure = process.security == "insecure"
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": build_process(process),
        "root": {"path": str(rootfs), "readonly": process.readonly_rootfs},
        "hostname": process.hostname or "buildkitsandbox",
        "mounts": _mounts(process, mounts, hosts=hosts, resolv=resolv, insecure=insecure),
        "linux": {
            "resources": {"devices": _device_rules(insecure=insecure)},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": [] if insecure else _MASKED,
            "readonlyPaths": [] if insecure else _READONLY,
        },
    }
    if insecure:
        spec["linux"]["devices"] = _insecure_devices()
    if process.network == "none":
        spec["linux"]["namespaces"].append({"type": "network"})
    sandbox = sandbox or Sandbox()
    if id:
        parent = process.cgroup_parent or sandbox.cgroup_parent
        spec["linux"]["cgroupsPath"] = cgroups_path(parent, id)
    if not insecure and seccomp.supported():
        bounding = spec["process"]["capabilities"]["bounding"]
        spec["linux"]["seccomp"] = seccomp.default_profile(bounding)
    return spec


def cgroups_path(parent: str, id: str) -> str:
    """Where container ``id``'s cgroup is: under ``buildkit`` (in ``parent`` when given), or
    in a systemd slice (``name.slice:prefix:``, the id its name), as BuildKit places them."""
    if ".slice" in parent and parent.endswith(":"):
        return parent + id
    return os.path.normpath(os.path.join("/", parent.lstrip("/"), "buildkit", id))


def build_process(process: ProcessSpec) -> dict[str, Any]:
    """The spec's ``process``; alone, the ``process.json`` of ``runc exec``, so a second
    process of a container gets its user, environment and limits the same way."""
    env = list(process.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    user: dict[str, Any] = {"uid": process.uid, "gid": process.gid}
    if process.additional_gids:
        user["additionalGids"] = list(process.additional_gids)
    found: dict[str, Any] = {
        "terminal": process.tty,
        "user": user,
        "args": list(process.args),
        "env": env,
        "cwd": process.cwd or "/",
        "capabilities": _capabilities(insecure=process.security == "insecure"),
        "noNewPrivileges": False,
    }
    if process.ulimits:
        found["rlimits"] = [
            {"type": _RLIMITS.get(name, f"RLIMIT_{name.upper()}"), "soft": soft, "hard": hard}
            for name, soft, hard in process.ulimits
        ]
    return found


#: capabilities by number, as the kernel numbers them (``/proc/self/status`` bitmaps)
_CAPABILITY_NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def _capabilities(*, insecure: bool) -> dict[str, list[str]]:
    """A sandboxed process's capabilities: containerd's default set. An insecure one's, as
    BuildKit grants them: that set and every capability the engine itself has (not more:
    runc cannot grant what it lacks), the engine's inheritable and ambient too."""
    if not insecure:
        return {k: CAPABILITIES for k in ("bounding", "effective", "permitted")}
    own = _own_capabilities()
    return {
        "bounding": CAPABILITIES + own,
        "effective": CAPABILITIES + own,
        "inheritable": own,
        "permitted": CAPABILITIES + own,
        "ambient": own,
    }


@cache
def _own_capabilities() -> list[str]:
    """The engine's effective capabilities, by name, in the kernel's order."""
    bits = 0
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    bits = int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return [f"CAP_{name}" for n, name in enumerate(_CAPABILITY_NAMES) if bits >> n & 1]


#: device nodes an insecure step gets besides the default ones (dmesg's, FUSE, KVM, TUN, loop
#: control), as BuildKit adds them: (path, major, minor)
_INSECURE_DEVICES = (
    ("/dev/kmsg", 1, 11),
    ("/dev/cuse", 10, 203),
    ("/dev/fuse", 10, 229),
    ("/dev/kvm", 10, 232),
    ("/dev/net/tun", 10, 200),
    ("/dev/loop-control", 10, 237),
)


def _insecure_devices() -> list[dict[str, Any]]:
    """The insecure step's extra devices: those above, then loop devices up to seven past the
    first free one (``LOOP_CTL_GET_FREE``; from 0 when it cannot be asked)."""
    found: list[dict[str, Any]] = [
        {"path": path, "type": "c", "major": major, "minor": minor}
        for path, major, minor in _INSECURE_DEVICES
    ]
    free = 0
    try:
        import fcntl

        fd = os.open("/dev/loop-control", os.O_RDWR)
        try:
            free = fcntl.ioctl(fd, 0x4C82)
        finally:
            os.close(fd)
    except OSError:
        free = 0
    found += [
        {"path": f"/dev/loop{n}", "type": "b", "major": 7, "minor": n} for n in range(free + 8)
    ]
    return found


def _mounts(
    process: ProcessSpec,
    mounts: Sequence[MountSpec],
    *,
    hosts: Path,
    resolv: Path,
    insecure: bool,
) -> list[dict[str, Any]]:
    sys_options = ["nosuid", "noexec", "nodev"] + ([] if insecure else ["ro"])
    found: list[dict[str, Any]] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": str(resolv),
            "options": ["nosuid", "noexec", "nodev", "rbind", "ro"],
        },
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": str(hosts),
            "options": ["nosuid", "noexec", "nodev", "rbind", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [*sys_options, "relatime"],
        },
    ]
    for mount in mounts:
        if mount.kind == "tmpfs":
            options = ["nosuid", "ro"] if mount.readonly else ["nosuid"]
            if mount.options.get("size"):
                options.append(f"size={mount.options['size']}")
            found.append(
                {"destination": mount.dest, "type": "tmpfs", "source": "tmpfs", "options": options}
            )
        else:
            options = ["rbind", "ro" if mount.readonly else "rw"]
            found.append(
                {
                    "destination": mount.dest,
                    "type": "bind",
                    "source": str(mount.source),
                    "options": options,
                }
            )
    # A later mount of the same destination wins; keep the last only.
    last = {m["destination"]: n for n, m in enumerate(found)}
    return [m for n, m in enumerate(found) if last[m["destination"]] == n]


def hosts_file(process: ProcessSpec) -> str:
    """``/etc/hosts`` of a step: localhost under its hostname, then ``--add-host`` entries."""
    return (
        f"127.0.0.1\tlocalhost {process.hostname}\n::1\tlocalhost ip6-localhost "
        "ip6-loopback\n" + "".join(f"{ip}\t{host}\n" for host, ip in process.extra_hosts)
    )


def resolv_conf(
    network: str,
    host_file: Path = Path("/etc/resolv.conf"),
    dns: DNSConfig | None = None,
    *,
    resolved_file: Path = Path("/run/systemd/resolve/resolv.conf"),
) -> str:
    """``/etc/resolv.conf`` of a step: the host's, without loopback nameservers unless the
    host network is used. When the host's only nameserver is systemd-resolved's stub
    (127.0.0.53), the servers it forwards to are read instead (``resolved_file``), as
    libnetwork does for BuildKit. With ``dns`` (the engine's ``[dns]``), written anew as
    BuildKit writes it: its nameservers, search domains and options, each list that is
    empty taken from the host's file."""
    text = _read(host_file)
    if _host_nameservers(text) == ["127.0.0.53"]:
        upstream = _read(resolved_file)
        if upstream or network != "host":  # the host's network reaches the stub itself
            text = upstream
    if dns is not None:
        nameservers = list(dns.nameservers) or _host_nameservers(text)
        search = list(dns.search_domains) or _last_fields(text, "search")
        options = list(dns.options) or _last_fields(text, "options")
        text = ""
        if search and " ".join(search).strip(" ") != ".":
            text += "search " + " ".join(search) + "\n"
        text += "".join(f"nameserver {n}\n" for n in nameservers)
        if options and " ".join(options).strip(" "):
            text += "options " + " ".join(options) + "\n"
    if network == "host":
        return text
    # libnetwork's FilterResolvDNS, as BuildKit v0.11 applies it (IPv6 on): loopback
    # nameservers out, Google's four in when no nameserver is left.
    text = _LOOPBACK_NAMESERVER.sub("", text)
    if not _host_nameservers(text):
        text += "\n" + "\n".join(f"nameserver {n}" for n in _FALLBACK_NAMESERVERS)
    return text


#: a loopback ``nameserver`` line and the blank space after it (libnetwork's pattern)
_LOOPBACK_NAMESERVER = re.compile(
    r"(?m)^nameserver[ \t\r\n\f]+((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)[ \t\r\n\f]*\n*"
)
_FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _uncommented(text: str) -> list[str]:
    return [line.partition("#")[0] for line in text.split("\n")]


def _host_nameservers(text: str) -> list[str]:
    """The IP addresses of the file's ``nameserver`` lines (a line with anything else is not
    one, as libnetwork reads them)."""
    import ipaddress

    found = []
    for line in _uncommented(text):
        words = line.split()
        if len(words) == 2 and words[0] == "nameserver":
            try:
                ipaddress.ip_address(words[1].partition("%")[0])
            except ValueError:
                continue
            found.append(words[1])
    return found


def _last_fields(text: str, keyword: str) -> list[str]:
    """The words after the last ``keyword`` line (``search``, ``options``)."""
    found: list[str] = []
    for line in _uncommented(text):
        words = line.split()
        if words and words[0] == keyword:
            found = words[1:]
    return found
