"""Differential cases of ``ADD`` of archives: tarballs in the context (plain, gzip, bzip2,
xz) that ADD unpacks and COPY does not, with their directories, links, modes and owners,
hostile names, files that only look like archives, several at once, a wildcard, ``--chown``
and ``--chmod``, over what the image holds; and ADD of a URL, which is never unpacked.

Archives are made here, the same bytes every time (:data:`RECIPES`), and written into the
context by the harness (``Case.archives``)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable

from tests.differential.harness import Case

_TIME = 1_600_000_000


def _tar(entries: list[tuple[str, str, object]]) -> bytes:
    """A tarball of (name, kind, detail): a "dir" (its mode), a "file" (its text, or (text,
    mode, uid, gid)), a "symlink" or "hardlink" (its target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, detail in entries:
            info = tarfile.TarInfo(name)
            info.mtime = _TIME
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = int(detail)  # type: ignore[call-overload]
                tar.addfile(info)
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(detail)
                tar.addfile(info)
            else:
                plain = (detail, 0o644, 0, 0)
                text, mode, uid, gid = detail if isinstance(detail, tuple) else plain
                data = str(text).encode()
                info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _tree() -> bytes:
    return _tar(
        [
            ("d/", "dir", 0o755),
            ("d/f", "file", "hello\n"),
            ("d/l", "symlink", "f"),
            ("d/h", "hardlink", "d/f"),
            ("e/", "dir", 0o700),
            ("top", "file", ("owned\n", 0o600, 1000, 2000)),
            ("x.sh", "file", ("#!/bin/sh\n", 0o755, 0, 0)),
        ]
    )


def _hostile() -> bytes:
    return _tar(
        [
            ("/abs", "file", "absolute\n"),
            ("../up", "file", "up\n"),
            ("ok/../../esc", "file", "escape\n"),
            ("lnk", "symlink", "/etc/passwd"),
        ]
    )


def _one() -> bytes:
    return _tar([("only", "file", "one\n")])


#: archives by recipe name
RECIPES: dict[str, Callable[[], bytes]] = {
    "tree.tar": _tree,
    "tree.tar.gz": lambda: gzip.compress(_tree(), mtime=0),
    "tree.tar.bz2": lambda: bz2.compress(_tree()),
    "tree.tar.xz": lambda: lzma.compress(_tree()),
    "tree.tgz": lambda: gzip.compress(_tree(), mtime=0),
    "one.tar": _one,
    "hostile.tar": _hostile,
    "text.gz": lambda: gzip.compress(b"just text\n", mtime=0),
    "fake.tar": lambda: b"not a tarball\n",
    "empty.tar": lambda: _tar([]),
}


def _case(name: str, dockerfile: str) -> Case:
    return Case(
        name=f"add-{name}",
        category="archives",
        dockerfile=dockerfile,
        archives={key: key for key in RECIPES},
    )


def _cases() -> list[Case]:
    found = [
        _case(f"unpack-{fmt.replace('.', '-')}", f"FROM scratch\nADD tree.{fmt} /x/\n")
        for fmt in ("tar", "tar.gz", "tar.bz2", "tar.xz", "tgz")
    ]
    found += [
        _case("to-new-path", "FROM scratch\nADD tree.tar /x\n"),
        _case("to-root", "FROM scratch\nADD tree.tar.gz /\n"),
        _case("to-workdir", "FROM scratch\nWORKDIR /w\nADD tree.tar .\n"),
        _case("chown", "FROM @BASE@\nADD --chown=2:3 tree.tar /x/\n"),
        _case("chown-name", "FROM @BASE@\nADD --chown=builder tree.tar /x/\n"),
        _case("chmod", "FROM scratch\nADD --chmod=0700 tree.tar /x/\n"),
        _case("hostile", "FROM scratch\nADD hostile.tar /x/\n"),
        _case("gzip-not-tar", "FROM scratch\nADD text.gz /x/\n"),
        _case("fake-tar", "FROM scratch\nADD fake.tar /x/\n"),
        _case("empty-tar", "FROM scratch\nADD empty.tar /x/\n"),
        _case("two", "FROM scratch\nADD tree.tar one.tar /x/\n"),
        _case("wildcard", "FROM scratch\nADD *.tar /x/\n"),
        _case("copy-does-not-unpack", "FROM scratch\nCOPY tree.tar tree.tar.gz /x/\n"),
        _case("over-the-image", "FROM @BASE@\nADD tree.tar /bin/\nADD one.tar /etc/\n"),
        _case("onto-a-file", "FROM @BASE@\nADD one.tar /etc/passwd\n"),
        _case("through-a-symlink", "FROM @BASE@\nRUN ln -s /tmp /t\nADD one.tar /t/\n"),
        _case(
            "then-run",
            "FROM @BASE@\nADD tree.tar /x/\nRUN find /x | sort | xargs stat -c '%n %a %u:%g %F'"
            " > /listing\n",
        ),
        _case("url-not-unpacked", "FROM scratch\nADD http://@REMOTE@/ctx.tar.gz /r/\n"),
        _case("url-to-file", "FROM scratch\nADD http://@REMOTE@/ctx.tar /r\n"),
        _case("url-chmod", "FROM scratch\nADD --chmod=0700 http://@REMOTE@/Dockerfile /r/\n"),
        _case("url-missing", "FROM scratch\nADD http://@REMOTE@/nope.tar.gz /r/\n"),
    ]
    return found


CASES = _cases()
