"""The seccomp filter of a sandboxed exec step: the one BuildKit's workers give every
``RUN`` that is not ``--security=insecure`` (Docker's default profile, v23).

What the filter allows follows from the step: the host's architecture, its kernel, and the
capabilities the process is bounded by. A syscall no rule allows fails with ``EPERM``;
``clone3`` without ``CAP_SYS_ADMIN`` fails with ``ENOSYS``, so that a C library falls back to
``clone``, whose namespace flags are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

__all__ = ["default_profile", "supported"]

#: what every sandboxed process may call, whatever its capabilities
_ALWAYS = """
    accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown
    chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
    clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl
    epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
    execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
    fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
    fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat
    fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64
    futex_waitv futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
    geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid
    getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid
    getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
    get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
    inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents
    io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
    io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
    landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
    madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
    mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
    mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink
    mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep
    newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe
    pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
    preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
    pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
    recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2
    restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
    rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
    sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid
    setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
    setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32
    setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
    set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown
    sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice
    stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs
    sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
    timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
    timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
    ugetrlimit umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork
    vmsplice wait4 waitid waitpid write writev
"""

#: ``clone``'s namespace flags (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET):
#: without ``CAP_SYS_ADMIN`` a clone may ask for none of them
_NAMESPACE_FLAGS = 0x7E020000
_ENOSYS = 38


class _Rule(NamedTuple):
    """Syscalls allowed (or answered with ``errno``) when the step meets every condition."""

    names: str
    args: tuple[dict[str, Any], ...] = ()
    errno: int = 0
    arches: tuple[str, ...] = ()  # on one of these (Go's names for the host)
    not_arches: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()  # bounded by all of these
    not_caps: tuple[str, ...] = ()  # bounded by none of these
    kernel: tuple[int, int] | None = None  # at least this kernel


def _arg(value: int, op: str, index: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "op": f"SCMP_CMP_{op}"}


_S390 = ("s390", "s390x")

_RULES = (
    _Rule(_ALWAYS),
    _Rule("process_vm_readv process_vm_writev ptrace", kernel=(4, 8)),
    _Rule("socket", args=(_arg(40, "NE"),)),  # AF_VSOCK
    # personality: PER_LINUX, UNAME26, PER_LINUX32, both, and the query (0xffffffff) only
    *(_Rule("personality", args=(_arg(v, "EQ"),)) for v in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)),
    _Rule("sync_file_range2 swapcontext", arches=("ppc64le",)),
    _Rule(
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        arches=("arm", "arm64"),
    ),
    _Rule("arch_prctl", arches=("amd64", "x32")),
    _Rule("modify_ldt", arches=("amd64", "x32", "x86")),
    _Rule("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", arches=_S390),
    _Rule("riscv_flush_icache", arches=("riscv64",)),
    _Rule("open_by_handle_at", caps=("CAP_DAC_READ_SEARCH",)),
    _Rule(
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
        "mount_setattr move_mount name_to_handle_at open_tree perf_event_open quotactl "
        "quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare",
        caps=("CAP_SYS_ADMIN",),
    ),
    _Rule(
        "clone",
        args=(_arg(_NAMESPACE_FLAGS, "MASKED_EQ"),),
        not_caps=("CAP_SYS_ADMIN",),
        not_arches=_S390,
    ),
    # s390 passes clone's flags second
    _Rule(
        "clone",
        args=(_arg(_NAMESPACE_FLAGS, "MASKED_EQ", 1),),
        arches=_S390,
        not_caps=("CAP_SYS_ADMIN",),
    ),
    _Rule("clone3", errno=_ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
    _Rule("reboot", caps=("CAP_SYS_BOOT",)),
    _Rule("chroot", caps=("CAP_SYS_CHROOT",)),
    _Rule("delete_module init_module finit_module", caps=("CAP_SYS_MODULE",)),
    _Rule("acct", caps=("CAP_SYS_PACCT",)),
    _Rule(
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        caps=("CAP_SYS_PTRACE",),
    ),
    _Rule("iopl ioperm", caps=("CAP_SYS_RAWIO",)),
    _Rule("settimeofday stime clock_settime clock_settime64", caps=("CAP_SYS_TIME",)),
    _Rule("vhangup", caps=("CAP_SYS_TTY_CONFIG",)),
    _Rule("get_mempolicy mbind set_mempolicy", caps=("CAP_SYS_NICE",)),
    _Rule("syslog", caps=("CAP_SYSLOG",)),
    _Rule("bpf", caps=("CAP_BPF",)),
    _Rule("perf_event_open", caps=("CAP_PERFMON",)),
)

#: the host's architecture (Go's name) -> the filter's architectures: its own, then those
#: its binaries may also be built for
_ARCHES = {
    "amd64": ("X86_64", "X86", "X32"),
    "arm64": ("AARCH64", "ARM"),
    "mips64": ("MIPS64", "MIPS", "MIPS64N32"),
    "mips64n32": ("MIPS64N32", "MIPS", "MIPS64"),
    "mipsel64": ("MIPSEL64", "MIPSEL", "MIPSEL64N32"),
    "mips3l64n32": ("MIPSEL64N32", "MIPSEL", "MIPSEL64"),
    "s390x": ("S390X", "S390"),
    "riscv64": ("RISCV64",),
}
_MACHINES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i686": "x86",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
}


def default_profile(
    capabilities: Sequence[str],
    *,
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The spec's ``linux.seccomp`` for a process bounded by ``capabilities``, on ``arch``
    (Go's name; the host's when unset) and ``kernel`` (major, minor; the host's)."""
    arch = arch or _host_arch()
    kernel = kernel or _host_kernel()
    bounded = set(capabilities)
    syscalls = []
    for rule in _RULES:
        if rule.arches and arch not in rule.arches:
            continue
        if arch in rule.not_arches or bounded & set(rule.not_caps):
            continue
        if not bounded.issuperset(rule.caps):
            continue
        if rule.kernel and kernel < rule.kernel:
            continue
        call: dict[str, Any] = {"names": rule.names.split()}
        if rule.errno:
            call.update(action="SCMP_ACT_ERRNO", errnoRet=rule.errno)
        else:
            call["action"] = "SCMP_ACT_ALLOW"
        if rule.args:
            call["args"] = list(rule.args)
        syscalls.append(call)
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1}
    if arch in _ARCHES:
        profile["architectures"] = [f"SCMP_ARCH_{a}" for a in _ARCHES[arch]]
    profile["syscalls"] = syscalls
    return profile


@cache
def supported() -> bool:
    """Whether this kernel filters syscalls (its processes' status says ``Seccomp``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            return any(line.startswith("Seccomp:") for line in status)
    except OSError:
        return False


def _host_arch() -> str:
    machine = os.uname().machine
    return _MACHINES.get(machine, machine)


def _host_kernel() -> tuple[int, int]:
    release = os.uname().release
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)
