"""``git://`` sources: a repository, a ref and a subdirectory, fetched with the git CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llbkit.core.errors import UserError
from llbkit.core.sources._base import BuiltinSource, ParsedSource, check_attrs, strip_scheme

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform

_KNOWN = (
    "git.keepgitdir",
    "git.fullurl",
    "git.authheadersecret",
    "git.authtokensecret",
    "git.knownsshhosts",
    "git.mountsshsock",
    "git.checksum",
    "git.skipsubmodules",
    "git.mtime",
    "git.fetchbycommit",
)


@dataclass(frozen=True)
class GitJob(ParsedSource):
    identifier: str
    remote: str
    url: str
    ref: str = ""
    subdir: str = ""
    keep_git_dir: bool = False


def parse_git(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> GitJob:
    _, rest = strip_scheme(identifier, {"git"})
    what = f"source {identifier}"
    check_attrs(what, attrs, "git.", _KNOWN)
    remote, _, fragment = rest.partition("#")
    if not remote:
        raise UserError(f"invalid source identifier {identifier!r}: no repository")
    ref, _, subdir = fragment.partition(":")
    url = attrs.get("git.fullurl") or f"https://{remote}"
    return GitJob(identifier, remote, url, ref, subdir, attrs.get("git.keepgitdir") == "true")


class GitSource(BuiltinSource, parser=parse_git):
    """Git repositories."""
