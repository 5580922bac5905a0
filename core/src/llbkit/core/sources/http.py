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
from typing import IO, TYPE_CHECKING, Any, NamedTuple
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


class Download(NamedTuple):
    """What a download of a URL was: the server's ETag for it, its digest, the file's name
    and the server's ``Last-Modified``."""

    etag: str
    checksum: str
    name: str
    modified: str


#: the file (in the source's state directory) of what downloads were, by URL
DOWNLOADS = "downloads.json"
#: the ETags kept per URL, newest last (BuildKit asks with every one it has a record of)
KEEP_ETAGS = 4


@dataclass(frozen=True)
class HTTPJob(ParsedSource):
    identifier: str
    checksum: str = ""
    filename: str = ""
    #: the file's mode as asked (0: not asked, the file is 0600; BuildKit's key holds the 0)
    perm: int = 0
    uid: int = 0
    gid: int = 0
    state_dir: Path | None = None
    _got: dict[str, tuple[Path, str, str, str]] = field(default_factory=dict, compare=False)
    #: what an earlier download the server says is unchanged was (its ETag answered)
    _known: dict[str, Download] = field(default_factory=dict, compare=False)

    async def _download(self, progress: ProgressSink | None) -> tuple[Path, str, str, str]:
        """Fetch the URL once per job into the state directory: (file, sha256 digest, name,
        the server's ``Last-Modified``)."""
        if "file" in self._got:
            return self._got["file"]
        where = self.state_dir or Path(tempfile.gettempdir())
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix="download-")
        digest = hashlib.new(self.checksum.split(":")[0] if self.checksum else "sha256")
        try:
            with os.fdopen(fd, "wb") as out:
                name, modified, etag = await self._fetch(out, digest, progress)
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
        served = name or self._url_name()  # the server's name for it (an attribute may rename it)
        filename = self.filename or served
        if etag and not self.checksum:
            self._remember(Download(etag, got, served, modified))
        self._got["file"] = (Path(tmp), got, filename, modified)
        return self._got["file"]

    def _url_name(self) -> str:
        """Go's ``path.Base`` of the URL's path, as BuildKit names a download (``download``
        when the path names nothing: ``/``)."""
        path = unquote(urlsplit(self.identifier).path)
        return path.rstrip("/").rsplit("/", 1)[-1] or "download"

    # -- what earlier downloads were (BuildKit's ETag revalidation) -------------------------

    def _downloads(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / DOWNLOADS

    def _every_download(self) -> dict[str, Any]:
        """What earlier downloads were, by URL (none when there is no file yet, or it is
        unreadable: each URL is then downloaded as if never before)."""
        path = self._downloads()
        try:
            known = json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError, RecursionError):
            return {}
        return known if isinstance(known, dict) else {}

    def _remembered(self, known: dict[str, Any] | None = None) -> list[Download]:
        """The earlier downloads of this URL that had an ETag, newest last."""
        entries = (self._every_download() if known is None else known).get(self.identifier)
        if not isinstance(entries, list):
            return []
        return [
            Download(*e)
            for e in entries
            if isinstance(e, list) and len(e) == 4 and all(isinstance(x, str) for x in e)
        ]

    def _remember(self, download: Download) -> None:
        path = self._downloads()
        if path is None:
            return
        known = self._every_download()
        kept = [list(d) for d in self._remembered(known) if d.etag != download.etag]
        known[self.identifier] = [*kept, list(download)][-KEEP_ETAGS:]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(download)}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, path)

    async def _revalidate(self) -> Download | None:
        """An earlier download the server says is still what the URL holds: a HEAD asking
        with the ETags it gave (``If-None-Match``), answered 304 or 200 with one of them, as
        BuildKit asks; None when there is none or the server says otherwise."""
        from llbkit.core.registry.http import Client, HTTPError

        known = {d.etag: d for d in self._remembered()}
        if not known:
            return None
        http = Client(verify=True, timeout=READ_TIMEOUT)
        try:
            response = await http.request(
                "HEAD", self.identifier, headers={"If-None-Match": ", ".join(known)}
            )
        except HTTPError:
            return None  # the GET that follows says what is wrong
        finally:
            await http.aclose()
        if response.status_code not in (200, 304):
            return None
        etag = response.headers.get("etag", "")
        if not etag and response.status_code == 304 and len(known) == 1:
            etag = next(iter(known))  # a 304 naming none answers the one asked about
        return known.get(etag)

    async def _fetch(
        self, out: IO[bytes], digest: Any, progress: ProgressSink | None
    ) -> tuple[str, str, str]:
        """The URL's body into ``out`` and ``digest``; its name (``Content-Disposition``),
        ``Last-Modified`` and ``ETag``."""
        from llbkit.core.registry.http import Client, HTTPError, Timeout

        http = Client(verify=True, timeout=READ_TIMEOUT)  # the machine's CAs, as buildkitd's
        try:
            response = await http.send("GET", self.identifier)
            try:
                if response.status_code >= 400:
                    raise UserError(  # BuildKit's words
                        f"{self.identifier}: invalid response status {response.status_code}"
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
                headers = response.headers
                return (
                    _disposition_name(disposition),
                    headers.get("last-modified", ""),
                    headers.get("etag", ""),
                )
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
        """Known up front with ``http.checksum``; else what an earlier download was, when the
        server says by its ETag that the URL still holds it; else the content's digest (a
        download). As BuildKit's, the key holds the server's ``Last-Modified`` (the file's
        time)."""
        if self.checksum:  # named as BuildKit names it before any download: by its URL
            return self._key(self.filename or self._url_name(), self.checksum, "")
        known = await self._revalidate()
        if known is not None:
            self._known["it"] = known
            return self._key(self.filename or known.name, known.checksum, known.modified)
        _, checksum, name, modified = await self._download(None)
        return self._key(name, checksum, modified)

    def _key(self, filename: str, checksum: str, modified: str) -> str:
        """BuildKit's key: Go's JSON of the name, mode, owner, checksum and time, hashed."""
        from llbkit.core.gojson import go_json

        key: dict[str, Any] = {
            "Filename": filename,
            "Perm": self.perm,
            "UID": self.uid,
            "GID": self.gid,
            "Checksum": checksum,
        }
        if modified:
            key["LastModTime"] = modified
        return "sha256:" + hashlib.sha256(go_json(key)).hexdigest()

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        tmp, got, filename, _ = await self._download(progress)
        known = self._known.get("it")
        if known is not None and got != known.checksum:
            # The server said the ETag still held, then sent other bytes: the key is wrong.
            self.discard()
            raise UserError(
                f"{self.identifier}: the content changed while it was fetched "
                f"(the server's ETag {known.etag} now gives {got}, not {known.checksum})"
            )
        target = dest / filename
        os.replace(tmp, target)
        self._got.clear()
        os.chmod(target, self.perm or 0o600)
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
    perm = parse_int(what, "http.perm", attrs["http.perm"], base=8) if "http.perm" in attrs else 0
    uid = parse_int(what, "http.uid", attrs["http.uid"]) if "http.uid" in attrs else 0
    gid = parse_int(what, "http.gid", attrs["http.gid"]) if "http.gid" in attrs else 0
    return HTTPJob(identifier, checksum, filename, perm, uid, gid)


class HTTPSource(BuiltinSource, parser=parse_http):
    """Files downloaded over HTTP(S)."""
