"""The operating systems and architectures Go (and so containerd and BuildKit) knows, so that a
platform naming another is caught as the typo it is, not as "no match for platform" in a
later pull."""

from __future__ import annotations

__all__ = ["platform_problem"]

_OS = frozenset(
    {
        *("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js"),
        *("linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"),
    }
)
_ARCH = frozenset(
    {
        *("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips"),
        *("mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le"),
        *("riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"),
    }
)
# Names containerd normalizes to Go's (platforms.Normalize).
_OS_ALIASES = frozenset({"macos"})
_ARCH_ALIASES = frozenset({"i386", "x86_64", "x86-64", "aarch64", "armhf", "armel"})


def platform_problem(text: str) -> str | None:
    """What is wrong with ``os/arch[/variant]`` (``None`` if nothing), in a few words."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return f"{text!r} is not os/arch[/variant]"
    os_name, arch = parts[0].lower(), parts[1].lower()
    if os_name not in _OS | _OS_ALIASES:
        return f"{text!r}: unknown operating system {parts[0]!r}"
    if arch not in _ARCH | _ARCH_ALIASES:
        return f"{text!r}: unknown architecture {parts[1]!r}"
    return None
