"""The operating systems and architectures Go (and so containerd and BuildKit) knows, so that a
platform naming another is caught as the typo it is, not as "no match for platform" in a
later pull."""

from __future__ import annotations

import json
import os
import re

__all__ = ["host_arch", "parse_platform", "platform_problem"]

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


#: containerd's own lists (a platform named by one word is looked up in them)
_GO_OS = frozenset(
    {
        *("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js"),
        *("linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos"),
    }
)
_GO_ARCH = frozenset(
    {
        *("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le"),
        *("loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc"),
        *("riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"),
    }
)
_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")


def _quote(text: str) -> str:
    """Go's ``%q`` for the names these messages quote."""
    return json.dumps(text, ensure_ascii=False)


def host_arch() -> str:
    """The machine's architecture as Go names it (``GOARCH``)."""
    return _normalize_arch(os.uname().machine or "amd64", "")[0]


def parse_platform(text: str) -> tuple[str, str, str]:
    """``(os, architecture, variant)`` of ``text`` as containerd's ``platforms.Parse`` then
    ``Normalize`` read it (what BuildKit does with a platform it is given); :class:`ValueError`
    in their words, less the ``invalid argument`` they end with."""
    if "*" in text:
        raise ValueError(f"{_quote(text)}: wildcards not yet supported")
    parts = text.split("/")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise ValueError(
                f"{_quote(part)} is an invalid component of {_quote(text)}: platform specifier "
                f'component must match "^[A-Za-z0-9_-]+$"'
            )
    if len(parts) == 1:
        os_name = _normalize_os(parts[0])
        if os_name in _GO_OS:
            return os_name, host_arch(), ""
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _GO_ARCH:
            return _normalized("linux", arch, variant)
        raise ValueError(f"{_quote(text)}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return _normalized(_normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
        return _normalized(_normalize_os(parts[0]), arch, variant)
    raise ValueError(f"{_quote(text)}: cannot parse platform specifier")


def _normalized(os_name: str, arch: str, variant: str) -> tuple[str, str, str]:
    """containerd's ``Normalize`` after ``Parse``, as BuildKit applies both."""
    arch, variant = _normalize_arch(arch, variant)
    return _normalize_os(os_name), arch, variant


def _normalize_os(name: str) -> str:
    name = name.lower() or "linux"
    return "darwin" if name == "macos" else name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant
