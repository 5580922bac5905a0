"""The heap the ``llbkit`` command builds on: glibc's malloc, on transparent huge pages.

An embedded build makes some thirty megabytes of small objects, most of them while its modules
are imported. Python's own allocator takes them in arenas of 4 KiB pages, each page a fault
that the kernel serves by clearing it; on a virtual machine a page the host no longer backs
costs tens of microseconds more. glibc's malloc told to use huge pages (the kernel's
``madvise`` mode, the usual default) takes the same heap in 2 MiB pages: a fraction of the
faults, and fewer TLB misses while the code runs. Both are chosen before the interpreter
starts, so the command starts itself again with them, once (its cost and what it saves are in
``docs/bench.md``).

It does so only when the user chose neither the allocator nor glibc's tunables, the kernel
offers huge pages, the command is not a build through a daemon (whose light client starts
in a few milliseconds), and a fault costs enough here to pay for the second start: where the
kernel clears a fresh page in a few microseconds, the faults saved are worth less than the
start, and glibc's malloc is no faster than Python's for the rest. The restarted process
takes the variables out of its environment again: what it runs (runc, credential helpers,
another llbkit) gets the user's environment.
"""

from __future__ import annotations

import os
import sys

__all__ = ["restart_on_huge_pages"]

#: set for the restarted process, which removes it with the two below
_MARK = "LLBKIT_HEAP_RESTARTED"
_SET = {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
#: microseconds per first touch of a fresh page above which the restart pays (about 3,000
#: faults saved against an interpreter's second start and glibc's slower small allocations)
DEAR_FAULT_US = 12.0
#: the probe's size: above glibc's mmap threshold (fresh pages), 64 faults (well under a
#: millisecond where they are cheap)
_PROBE_PAGES = 64


def restart_on_huge_pages(argv: list[str], address_env: str) -> None:
    """Start this command again on the huge-page heap (see the module), or return: when it
    already runs on it, or should not. ``argv``: the command's arguments; ``address_env``:
    the variable naming a daemon."""
    env = os.environ
    if env.pop(_MARK, None) is not None:
        for name in _SET:
            env.pop(name, None)
        return
    if not _wanted(argv, address_env):
        return
    env.update(_SET, **{_MARK: "1"})
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:  # no interpreter to start again (removed meanwhile): go on as it is
        for name in (*_SET, _MARK):
            env.pop(name, None)


def _wanted(argv: list[str], address_env: str) -> bool:
    env = os.environ
    if sys.platform != "linux" or sys.flags.ignore_environment or not sys.executable:
        return False
    if getattr(sys, "frozen", False):  # a bundled interpreter: its own way of starting
        return False
    if any(name in env for name in _SET) or env.get(address_env):
        return False
    if any(word == "--addr" or word.startswith("--addr=") for word in argv):
        return False
    try:
        with open(_THP, "rb") as modes:
            if b"[never]" in modes.read():
                return False
    except OSError:  # no transparent huge pages in this kernel
        return False
    return _faults_dear()


def _faults_dear() -> bool:
    """Whether a fresh page's first touch costs more than :data:`DEAR_FAULT_US` here, timed
    on a buffer of new pages (what the kernel does for each page a heap grows by)."""
    from time import perf_counter

    start = perf_counter()
    probe = bytearray(_PROBE_PAGES << 12)  # zeroed as it is made: each page touched once
    spent = perf_counter() - start
    del probe
    return spent * 1e6 / _PROBE_PAGES > DEAR_FAULT_US
