"""A build context that is not the client's directory (``--opt context=URL``, what
``docker buildx build https://…`` sends): a Git repository, whose checkout holds the
Dockerfile too, or an HTTP URL, an archive unpacked as the context or else the Dockerfile
itself. BuildKit's rules for which is which, and the sources it makes of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llbkit.sdk import llb

__all__ = [
    "GitRef",
    "git_context",
    "http_download",
    "is_archive",
    "parse_git_ref",
    "remote_context",
    "unpacked",
]

#: ``user@host:path``, Git's implicit SSH transport
_IMPLICIT_SSH = re.compile(r"^[a-zA-Z0-9\-_]+@[a-zA-Z0-9\-.]+:.*$")
#: an HTTP(S) URL is a repository only when its path ends in ``.git`` (before a fragment)
_GIT_SUFFIX = re.compile(r"\.git(?:#.+)?$")
_HTTP = re.compile(r"^https?://")


@dataclass(frozen=True)
class GitRef:
    """A repository reference: ``REMOTE[#COMMIT[:SUBDIR]]``."""

    remote: str
    commit: str = ""
    subdir: str = ""


def parse_git_ref(ref: str) -> GitRef | None:
    """``ref`` as a Git repository, as BuildKit's ``gitutil.ParseGitRef`` takes one: by its
    scheme (``git://``, ``ssh://``, ``http(s)://`` ending in ``.git``), ``user@host:path`` or
    ``github.com/…``; None for anything else."""
    if not ref.startswith("github.com/"):
        if ref.startswith(("http://", "https://")):
            if not _GIT_SUFFIX.search(ref):
                return None
        elif not ref.startswith(("git://", "ssh://")) and not _IMPLICIT_SSH.match(ref):
            return None
    remote, _, fragment = ref.partition("#")
    if not remote:
        return None
    commit, _, subdir = fragment.partition(":")
    return GitRef(remote, commit, subdir)


def is_archive(header: bytes) -> bool:
    """What BuildKit unpacks as a remote context: bzip2, gzip or xz by their magic, or a tar
    whose first header reads."""
    if header.startswith((b"\x42\x5a\x68", b"\x1f\x8b\x08", b"\xfd\x37\x7a\x58\x5a\x00")):
        return True
    import io
    import tarfile  # only a remote context reads one: a warm build imports no tar code

    try:
        with tarfile.open(fileobj=io.BytesIO(header), mode="r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError):
        return False


def git_context(ref: GitRef, written: str, keep_git_dir: bool) -> llb.State:
    """The repository's checkout at its commit (and subdirectory), named as BuildKit names it."""
    commit = ref.commit + (f":{ref.subdir}" if ref.subdir else "")
    return llb.git(
        ref.remote,
        commit,
        keep_git_dir=keep_git_dir,
        custom_name=f"[internal] load git source {written}",
    )


def http_download(url: str) -> llb.State:
    """The URL downloaded as the file ``context``."""
    return llb.http(url, filename="context", custom_name="[internal] load remote build context")


def unpacked(download: llb.State) -> llb.State:
    """A downloaded archive, unpacked as the context."""
    return llb.scratch().file(llb.copy(download, "/context", "/", attempt_unpack=True))


def remote_context(url: str) -> str:
    """``git``, ``http`` or "" (the client's directory) for a ``context`` option's value."""
    if parse_git_ref(url) is not None:
        return "git"
    return "http" if _HTTP.match(url) else ""
