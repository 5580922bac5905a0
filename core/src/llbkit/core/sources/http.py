"""``http://`` and ``https://`` sources: one downloaded file, optionally pinned by checksum."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from llbkit.core.errors import ConfigError, UserError
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    parse_int,
    strip_scheme,
)

if TYPE_CHECKING:
    from llbkit.core.plugins.context import ClientIO, Platform
    from llbkit.core.plugins.progress import ProgressSink

_KNOWN = (
    "http.checksum",
    "http.filename",
    "http.perm",
    "http.uid",
    "http.gid",
    "http.authheadersecret",
)
#: seconds without a byte from the server before a download is given up
READ_TIMEOUT = 60.0
_DIGEST = re.compile(r"^sha(256:[0-9a-f]{64}|384:[0-9a-f]{96}|512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class HTTPJob(ParsedSource):
    identifier: str
    checksum: str = ""
    filename: str = ""
    perm: int = 0o600
    uid: int = 0
    gid: int = 0
    state_dir: Path | None = None
    _got: dict[str, tuple[Path, str, str]] = field(default_factory=dict, compare=False)

    async def _download(self, progress: ProgressSink | None) -> tuple[Path, str, str]:
        """Fetch the URL once per job into the state directory: (file, sha256 digest, name)."""
        if "file" in self._got:
            return self._got["file"]
        where = self.state_dir or Path(tempfile.gettempdir())
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix="download-")
        digest = hashlib.new(self.checksum.split(":")[0] if self.checksum else "sha256")
        try:
            with os.fdopen(fd, "wb") as out:
                name, modified = await self._fetch(out, digest, progress)
        except BaseException:
            os.unlink(tmp)
            raise
        got = f"{digest.name}:{digest.hexdigest()}"
        if self.checksum and got != self.checksum:
            os.unlink(tmp)
            raise UserError(
                f"{self.identifier}: digest mismatch: expected {self.checksum}, got {got}"
            )
        _set_mtime(tmp, modified)
        path = urlsplit(self.identifier).path
        filename = self.filename or name or unquote(path.rsplit("/", 1)[-1]) or "index"
        self._got["file"] = (Path(tmp), got, filename)
        return self._got["file"]

    async def _fetch(
        self, out: IO[bytes], digest: Any, progress: ProgressSink | None
    ) -> tuple[str, str]:
        """The URL's body into ``out`` and ``digest``; its name (``Content-Disposition``)
        and ``Last-Modified``."""
        from llbkit.core.registry.http import Client, HTTPError, Timeout

        http = Client(verify=True, timeout=READ_TIMEOUT)  # the machine's CAs, as buildkitd's
        try:
            response = await http.send("GET", self.identifier)
            try:
                if response.status_code >= 400:
                    raise UserError(
                        f"{self.identifier}: download failed: HTTP {response.status_code}"
                    )
                total = int(response.headers.get("content-length") or 0)
                done = 0
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress.status(self.identifier, current=done, total=total)
                disposition = response.headers.get("content-disposition", "")
                return _disposition_name(disposition), response.headers.get("last-modified", "")
            finally:
                await response.aclose()
        except HTTPError as err:
            reason = (
                f"no answer for {READ_TIMEOUT:g}s ({type(err).__name__})"
                if isinstance(err, Timeout)
                else str(err) or type(err).__name__
            )
            raise UserError(f"{self.identifier}: download failed: {reason}") from None
        finally:
            await http.aclose()

    def discard(self) -> None:
        """Remove a download that no fetch used."""
        if "file" in self._got:
            self._got.pop("file")[0].unlink(missing_ok=True)

    async def cache_key(self, client: ClientIO) -> str:
        """Known up front with ``http.checksum``; otherwise the content's digest (a download)."""
        checksum = self.checksum or (await self._download(None))[1]
        key = {
            "Filename": self.filename,
            "Perm": self.perm,
            "UID": self.uid,
            "GID": self.gid,
            "Checksum": checksum,
        }
        return (
            "sha256:" + hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()
        )

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        tmp, _, filename = await self._download(progress)
        target = dest / filename
        os.replace(tmp, target)
        self._got.clear()
        os.chmod(target, self.perm)
        if os.geteuid() == 0:
            os.chown(target, self.uid, self.gid)


def _set_mtime(path: str, header: str) -> None:
    """As BuildKit: a downloaded file has the server's ``Last-Modified`` time, or the epoch
    when there is none (or it cannot be read)."""
    stamp = 0.0
    if header:
        from email.utils import parsedate_to_datetime

        with contextlib.suppress(TypeError, ValueError):  # unreadable: the epoch
            stamp = parsedate_to_datetime(header).timestamp()
    os.utime(path, (stamp, stamp))


def _disposition_name(header: str) -> str:
    match = re.search(r'filename="?([^";]+)"?', header)
    return os.path.basename(match.group(1)) if match else ""


def parse_http(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> HTTPJob:
    _, rest = strip_scheme(identifier, {"http", "https"})
    what = f"source {identifier}"
    if not rest or rest.startswith("/"):
        raise UserError(f"invalid source identifier {identifier!r}: no host")
    check_attrs(
        what, {k: v for k, v in attrs.items() if not k.startswith("http.header.")}, "http.", _KNOWN
    )
    checksum = attrs.get("http.checksum", "")
    if checksum and not _DIGEST.match(checksum):
        raise ConfigError(
            f"{what}: attribute http.checksum={checksum!r} is not a digest (sha256:<64 hex>)"
        )
    filename = attrs.get("http.filename", "")
    if "/" in filename:
        raise ConfigError(
            f"{what}: attribute http.filename={filename!r} must be a file name, not a path"
        )
    perm = (
        parse_int(what, "http.perm", attrs["http.perm"], base=8) if "http.perm" in attrs else 0o600
    )
    uid = parse_int(what, "http.uid", attrs["http.uid"]) if "http.uid" in attrs else 0
    gid = parse_int(what, "http.gid", attrs["http.gid"]) if "http.gid" in attrs else 0
    return HTTPJob(identifier, checksum, filename, perm, uid, gid)


class HTTPSource(BuiltinSource, parser=parse_http):
    """Files downloaded over HTTP(S)."""
