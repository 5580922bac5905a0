"""``git://`` sources: a repository, a ref and a subdirectory, fetched with the git CLI."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from llbkit.core.errors import UserError
from llbkit.core.fs.iterative import rmtree
from llbkit.core.sources._base import BuiltinSource, ParsedSource, check_attrs, strip_scheme

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform
    from llbkit.core.plugins.progress import ProgressSink

_SHA = re.compile(r"^[0-9a-f]{40}$")
_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}


def _git(what: str, *args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise UserError(f"{what}: the git command is not installed") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["failed"]
        # git's own verdict ("fatal: ..."), not the advice it prints after it
        said = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
        raise UserError(f"{what}: git {args[0]}: {said}")
    return done.stdout


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
    record_type = "source.git.checkout"

    identifier: str
    remote: str
    url: str
    ref: str = ""
    subdir: str = ""
    keep_git_dir: bool = False
    _commit: dict[str, str] = field(default_factory=dict, compare=False)

    def _resolve(self) -> str:
        if "sha" in self._commit:
            return self._commit["sha"]
        if _SHA.match(self.ref):
            sha = self.ref
        else:
            ref = self.ref or "HEAD"
            out = _git(self.identifier, "ls-remote", self.url, ref)
            lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
            # Prefer an exact branch or tag; a peeled tag (^{}) names the commit itself.
            wanted = [ref, f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]
            by_name = {name: sha for sha, name in lines}
            sha = next((by_name[w] for w in wanted if w in by_name), "")
            if not sha:
                raise UserError(f"{self.identifier}: ref {ref!r} not found in {self.url}")
        self._commit["sha"] = sha
        return sha

    async def cache_key(self, client: ClientIO) -> str:
        """The commit the ref names (plus ``.git`` and the subdirectory, as BuildKit keys it)."""
        key = await anyio.to_thread.run_sync(self._resolve)
        if self.keep_git_dir:
            key += ".git"
        if self.subdir.strip("/"):
            key += ":" + self.subdir.strip("/")
        return key

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        await anyio.to_thread.run_sync(self._fetch, dest)

    def _fetch(self, dest: Path) -> None:
        sha = self._resolve()
        work = Path(tempfile.mkdtemp(dir=dest.parent))
        try:
            _git(self.identifier, "init", "-q", str(work))
            wanted = sha if _SHA.match(self.ref) or not self.ref else self.ref
            try:
                _git(self.identifier, "fetch", "-q", "--depth=1", self.url, wanted, cwd=work)
            except UserError:
                _git(self.identifier, "fetch", "-q", self.url, cwd=work)
            _git(self.identifier, "checkout", "-q", sha, cwd=work)
            subdir = self.subdir.strip("/")
            top = work / subdir if subdir else work
            if not top.is_dir():
                raise UserError(f"{self.identifier}: subdirectory {subdir!r} not found")
            for entry in os.listdir(top):
                if entry == ".git" and not (self.keep_git_dir and not subdir):
                    continue
                os.rename(top / entry, dest / entry)
        finally:
            rmtree(work, ignore_errors=True)


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
