"""Differential cases of what a ``RUN`` step sees of its sandbox: its capabilities and
syscall filter, its user and groups, its mounts and devices, its cgroup, the paths it may not
read or write, what it may and may not do as root (namespaces, mounts, the clock, the host
name), with each ``USER`` form and network mode. Each probe writes what it saw to ``/probe``,
which the image's tree then holds.

Only what does not depend on the machine is written: mount types and flags, not devices; a
cgroup's path with the container's id as ``ID``. BuildKit's tracing (an ``OTEL_*``
environment and ``/dev/otel-grpc.sock`` in every step) is left out: llbkit has no tracing
socket to offer a step."""

from __future__ import annotations

from dataclasses import replace

from tests.differential.harness import Case

#: what a probe runs, by name: a shell script whose standard output and error are kept
PROBES = {
    "status": "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status",
    "id": "id; id -G; whoami",
    "mounts": (
        'awk \'{split($4, o, ","); t = $3; if ($1 ~ /^\\//) t = "bind"; print $2, t, o[1]}\''
        " /proc/mounts | grep -v otel"
    ),
    "dev": "ls -la /dev | grep -v otel | awk '{print $1, $3, $4, $NF}'",
    "env": "env | grep -v -e OTEL -e TRACEPARENT | sort",
    "cgroup": "cut -d: -f3 /proc/self/cgroup | sed 's#/[^/]*$#/ID#' | sort -u",
    "names": "hostname; cat /etc/hosts; test -s /etc/resolv.conf && echo resolv",
    "paths": (
        "for p in /proc/kcore /proc/keys /proc/timer_list /proc/acpi /sys/firmware; do"
        ' (cat $p > /dev/null; echo "$p $?") 2>&1; done;'
        " (echo 1 > /proc/sys/kernel/domainname) 2>&1; (touch /sys/x) 2>&1;"
        " (touch /sys/fs/cgroup/x) 2>&1; (echo b > /proc/sysrq-trigger) 2>&1; true"
    ),
    "namespaces": (
        'for f in U n m i u p C; do (unshare -$f true; echo "unshare -$f $?") 2>&1; done;'
        ' (nsenter -t 1 -m true; echo "nsenter $?") 2>&1'
    ),
    "mount": (
        '(mount -t tmpfs t /tmp; echo "mount $?") 2>&1;'
        ' (umount /dev/shm; echo "umount $?") 2>&1;'
        ' (mount --bind /bin /tmp; echo "bind $?") 2>&1'
    ),
    # Never in an insecure step: with every capability it sets the host's clock.
    "privileged": (
        '(hostname other; echo "sethostname $?") 2>&1;'
        ' (date -s 2020-01-01 > /dev/null; echo "date $?") 2>&1;'
        ' (renice -n -5 $$ > /dev/null; echo "renice $?") 2>&1;'
        ' (ionice -c 1 true; echo "ionice $?") 2>&1;'
        ' (dmesg > /dev/null; echo "dmesg $?") 2>&1;'
        ' (swapoff -a; echo "swapoff $?") 2>&1;'
        ' (sysctl -w kernel.domainname=x; echo "sysctl $?") 2>&1'
    ),
    "allowed": (
        '(chroot / true; echo "chroot $?") 2>&1;'
        ' (mknod /tmp/null c 1 3 && ls -l /tmp/null | cut -c1; echo "mknod $?") 2>&1;'
        ' (cat /tmp/null; echo "open device $?") 2>&1;'
        ' (linux32 true; echo "personality $?") 2>&1;'
        ' (chown 1:1 /tmp && stat -c %u:%g /tmp; echo "chown $?") 2>&1;'
        ' (setpriv --reuid 1000 --regid 1000 --clear-groups id -u; echo "setpriv $?") 2>&1;'
        ' (taskset -p 1 $$ > /dev/null; echo "taskset $?") 2>&1;'
        ' (ping -c 1 -W 2 127.0.0.1 > /dev/null; echo "ping $?") 2>&1'
    ),
    "processes": (
        "echo $$ $PPID; grep -E '^(Name|PPid|Uid|Gid|Groups|Umask)' /proc/1/status;"
        " tr '\\0' ' ' < /proc/1/cmdline"
    ),
    "links": "ip -o link | awk '{print $2}'",
}
#: ``RUN --mount``s a probe runs with, by a name for them: each under ``/m``
MOUNTS = {
    "tmpfs": "type=tmpfs,target=/m/t",
    "tmpfs-size": "type=tmpfs,target=/m/t,size=1048576",
    "cache": "type=cache,target=/m/c",
    "cache-ro": "type=cache,target=/m/c,ro",
    "cache-uid": "type=cache,target=/m/c,uid=1000,gid=2000,mode=0750",
    "bind": "type=bind,target=/m/b",
    "bind-rw": "type=bind,target=/m/b,rw",
    "bind-from": "type=bind,from=@BASE@,source=/bin,target=/m/b",
    "bind-file": "type=bind,source=a.txt,target=/m/f",
    "secret-missing": "type=secret,id=nope,target=/m/s",
    "secret-required": "type=secret,id=nope,target=/m/s,required",
    "ssh-missing": "type=ssh,target=/m/ssh",
    "two": "type=tmpfs,target=/m/t --mount=type=bind,target=/m/b",
}
#: what a probe of ``--mount``s writes: each mount under ``/m`` (its type, and the options
#: that do not depend on the machine: a directory's, ro or rw only), then each path there
#: (mode, owner)
MOUNT_PROBE = (
    'awk \'$2 ~ /^\\/m/ {t = $3; o = $4; if ($1 ~ /^\\//) t = "bind";'
    ' if (t == "bind" || t == "overlay") sub(/,.*/, "", o);'
    ' gsub(/(size|nr_inodes)=[^,]*,?|inode64,?/, "", o); print $2, t, o}\' /proc/mounts;'
    " find /m -maxdepth 2 -exec stat -c '%n %a %u:%g %F' {} + | sort"
)
#: the ``USER`` a probe runs as (unset: none, root), by a name for it
USERS = {
    "root": "",
    "builder": "builder",
    "uid": "1000",
    "uid-gid": "1000:1000",
    "name-group": "builder:extra",
    "nobody": "nobody",
    "unknown-uid": "4242",
}
#: probes whose answer depends on the user
BY_USER = ("status", "id", "namespaces", "mount", "privileged", "allowed", "env")
#: ``RUN --network`` modes BuildKit takes without an entitlement
NETWORKS = ("default", "none")
#: probes that would show the host's network (its interfaces): run without one only
HOST_NETWORK = ("links",)
#: probes whose answer depends on the network mode
BY_NETWORK = ("mounts", "names", "status", "namespaces", "links", "allowed")


def _case(name: str, script: str, user: str = "", run_flags: str = "") -> Case:
    lines = ["FROM @BASE@"]
    if user:
        lines.append(f"USER {user}")
    lines.append(f"RUN {run_flags}( {script} ) > /tmp/probe 2>&1; true")
    if user:
        lines.append("USER root")
    lines.append("RUN mv /tmp/probe /probe")
    return Case(name=name, category="sandbox", dockerfile="\n".join(lines) + "\n")


def _cases() -> list[Case]:
    found = [
        _case(f"sandbox-{probe}", script)
        for probe, script in PROBES.items()
        if probe not in HOST_NETWORK
    ]
    found += [
        _case(f"sandbox-{probe}-user-{key}", PROBES[probe], user)
        for probe in BY_USER
        for key, user in USERS.items()
        if user
    ]
    found += [
        _case(f"sandbox-{probe}-network-{mode}", PROBES[probe], run_flags=f"--network={mode} ")
        for probe in BY_NETWORK
        for mode in NETWORKS
        if mode == "none" or probe not in HOST_NETWORK
    ]
    found += [
        _case(f"sandbox-run-mount-{key}", MOUNT_PROBE, run_flags=f"--mount={flags} ")
        for key, flags in MOUNTS.items()
    ]
    # the host's network, which the build is given (the host's interfaces are not written)
    found += [
        replace(
            _case(f"sandbox-{probe}-network-host", PROBES[probe], run_flags="--network=host "),
            allow=["network.host"],
        )
        for probe in BY_NETWORK
        if probe not in HOST_NETWORK
    ]
    # a step's network mode is its own: the next RUN has the default network again
    found.append(
        Case(
            name="sandbox-network-none-then-default",
            category="sandbox",
            dockerfile=(
                "FROM @BASE@\nRUN --network=none ip -o link > /none\n"
                "RUN (ip -o link | grep -qv ' lo:' && echo more than loopback"
                " || echo loopback only) > /default\n"
            ),
        )
    )
    # what needs an entitlement the build was not given: BuildKit refuses it
    found += [
        Case(
            name=f"sandbox-refused-{what}",
            category="sandbox",
            dockerfile=f"FROM @BASE@\nRUN {flag} true\n",
        )
        for what, flag in (("insecure", "--security=insecure"), ("host", "--network=host"))
    ]
    found.append(
        Case(
            name="sandbox-security-sandbox",
            category="sandbox",
            dockerfile=(
                "FROM @BASE@\nRUN --security=sandbox (grep Seccomp /proc/self/status; "
                "unshare -U true) > /probe 2>&1; true\n"
            ),
        )
    )
    return found


CASES = _cases()
