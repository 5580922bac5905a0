"""Applying an image layer (a tar stream) onto a tree: whiteouts, opaque directories, and every
path kept inside the tree, however its entries or symlinks point."""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from llbkit.core.errors import UserError
from llbkit.core.fs.iterative import makedirs
from llbkit.core.fs.rootpath import resolve_in_root
from llbkit.core.snapshot.layers import _OPQ, _WH, OPAQUE_XATTR, _remove, make_whiteout
from llbkit.core.snapshot.limits import LayerLimits, current_limits, set_limits

__all__ = [
    "BoundedTarInfo",
    "LayerError",
    "LayerLimits",
    "apply_tar",
    "check_member",
    "decompressed",
    "open_archive",
    "set_limits",
    "unpack_layer",
]

#: Go's archive/tar bound on a PAX or GNU long-name header's body, which is read whole.
MAX_SPECIAL_HEADER = 1 << 20


class LayerError(UserError):
    """A layer that cannot be applied (corrupt, or not a tar)."""


def _clean(name: str) -> str:
    """The member's path relative to the tree; ``..`` stops at its top, as containerd's
    ``filepath.Clean`` of a rooted name does (``..data`` and ``...`` are plain names)."""
    return posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")


def _check(member: tarfile.TarInfo, base: str) -> None:
    """Refuse what BuildKit's applier refuses: header types it does not handle (sparse files,
    which would be written out in full) and whiteouts naming no entry of their directory."""
    if member.type == tarfile.GNUTYPE_SPARSE:
        raise LayerError(f"{member.name}: unhandled tar header type {member.type[0]}")
    if member.sparse is not None:
        raise LayerError(f"{member.name}: sparse files are not supported (PAX sparse headers)")
    if base.startswith(_WH) and base != _OPQ and base[len(_WH) :] in ("", ".", ".."):
        raise LayerError(f"{member.name}: invalid whiteout name: {base}: invalid archive")


def apply_tar(stream: IO[bytes], dest: str, *, what: str = "layer") -> None:
    """Apply the (possibly gzip/bzip2/xz compressed) tar ``stream`` onto ``dest``."""
    _run(_Applier(dest), stream, f"{what}: cannot apply")


def unpack_layer(stream: IO[bytes], dest: str, fmt: str, *, what: str = "layer") -> None:
    """Unpack an image layer into the empty directory ``dest`` as a store layer: its
    whiteouts are kept (in the store's ``fmt``), not applied."""
    _run(_Applier(dest, keep_whiteouts=fmt), stream, f"{what}: cannot unpack")


#: the first bytes of a zstd frame (tarfile reads gzip, bzip2 and xz itself, not zstd)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _peek(stream: IO[bytes], size: int) -> bytes:
    """The stream's first ``size`` bytes, left unread (empty when it cannot say)."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(size)[:size])
    if stream.seekable():
        where = stream.tell()
        head = stream.read(size)
        stream.seek(where)
        return head
    return b""


#: the first bytes of a gzip member
_GZIP_MAGIC = b"\x1f\x8b"


def decompressed(stream: IO[bytes], *, threaded: bool = True) -> IO[bytes]:
    """``stream`` itself, or its content: zstd (a layer or an ADDed archive may be zstd, as
    BuildKit reads them, in one frame or several), or gzip, inflated by ISA-L on a thread of
    its own (several times zlib's speed, and beside the unpacking rather than before it).
    Not ``threaded``, a stream cut short still gives what precedes the cut, as Go's reader
    does (the thread inflates whole blocks: a cut anywhere in one fails its first read)."""
    head = _peek(stream, 4)
    if head.startswith(_GZIP_MAGIC):
        from isal import igzip, igzip_threaded

        inflated: IO[bytes]
        if threaded:
            inflated = igzip_threaded.open(stream, "rb", threads=1)  # type: ignore[no-untyped-call]
        else:
            gz = igzip.IGzipFile(fileobj=stream, mode="rb")  # type: ignore[no-untyped-call]
            inflated = cast("IO[bytes]", gz)
        return cast("IO[bytes]", _Inflated(inflated))
    if head != _ZSTD_MAGIC:
        return stream
    import zstandard

    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return reader


@contextlib.contextmanager
def open_archive(
    path: str | os.PathLike[str], *, threaded: bool = True
) -> Iterator[tarfile.TarFile]:
    """A file ADD may unpack, read as BuildKit's ``DecompressStream`` reads it: a tar plain,
    gzip (inflated by ISA-L), zstd, bzip2 or xz. Read in order, once (a stream). A zstd
    failure is a :class:`tarfile.ReadError`, as the others' are. ``threaded=False`` to read
    only its start (whether it is an archive: a cut stream still is one)."""
    with open(path, "rb") as raw:
        content: IO[bytes] | None = None
        try:
            content = decompressed(raw, threaded=threaded)
            with tarfile.open(fileobj=content, mode="r|*", tarinfo=BoundedTarInfo) as archive:
                yield archive
        except Exception as err:
            if not type(err).__module__.startswith("zstandard"):
                raise
            raise tarfile.ReadError(f"zstd: {err}") from None
        finally:
            if isinstance(content, _Inflated):
                content.close()  # its thread stops, whatever the tar left unread


class _Inflated:
    """A gzip stream's content, its failures in the words tarfile gives them."""

    def __init__(self, reader: IO[bytes]) -> None:
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except EOFError:
            raise tarfile.ReadError("unexpected end of data") from None
        except Exception as err:  # ISA-L's error, or gzip.BadGzipFile
            if isinstance(err, OSError) and not type(err).__name__.startswith("BadGzip"):
                raise  # the stream under it failed
            if "CRC" in str(err):  # in BuildKit's (Go's) words
                raise tarfile.ReadError("gzip: invalid checksum") from None
            raise tarfile.ReadError("invalid compressed data") from None

    def close(self) -> None:
        self._reader.close()


class BoundedTarInfo(tarfile.TarInfo):
    """A member whose extended header (read into memory whole) is refused past Go's bound,
    as BuildKit's tar reader refuses it: a header's claim never sizes an allocation."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _SPECIAL and self.size > MAX_SPECIAL_HEADER:
            raise LayerError(f"{self.name}: archive/tar: header field too long")
        return super()._proc_member(tarfile)  # type: ignore[misc,no-any-return]


_SPECIAL = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}


def check_member(member: tarfile.TarInfo, count: int, limits: LayerLimits | None = None) -> None:
    """Refuse an archive past its limits (the engine's, by default) before its ``count``-th
    member, ``member``, is written."""
    limits = limits or current_limits()
    if count > limits.entries:
        raise LayerError(
            f"more than {limits.entries} entries ([llbkit] max-layer-entries = {limits.entries})"
        )
    if member.offset_data + member.size > limits.size:
        raise LayerError(
            f"{member.name}: the layer expands past {limits.size} bytes "
            f"([llbkit] max-layer-size = {limits.size})"
        )


#: below this size a compressed file is inflated in the thread that reads the tar: a thread of
#: its own costs more in handing blocks over (the two take turns on the interpreter) than it wins
THREAD_FROM = 4 << 20


def _size(stream: IO[bytes]) -> int | None:
    """How big a file ``stream`` is, if it is one (a pipe, or a download still growing, is
    not)."""
    try:
        found = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


def _run(applier: _Applier, stream: IO[bytes], failure: str) -> None:
    limits = current_limits()
    content: IO[bytes] | None = None
    try:
        size = _size(stream)
        content = decompressed(stream, threaded=size is None or size >= THREAD_FROM)
        with tarfile.open(fileobj=content, mode="r|*", tarinfo=BoundedTarInfo) as tar:
            for count, member in enumerate(tar, 1):
                check_member(member, count, limits)
                applier.member(tar, member)
    except (LayerError, tarfile.TarError, EOFError, OSError) as err:
        raise LayerError(f"{failure}: {err}") from None
    except Exception as err:
        if not type(err).__module__.startswith("zstandard"):
            raise
        raise LayerError(f"{failure}: zstd: {err}") from None
    finally:
        if isinstance(content, _Inflated):
            content.close()  # its thread stops, whatever the tar left unread
    for path, identity, mtime in reversed(applier.dir_times):
        # A later entry of the layer may have replaced the directory, or one above it with a
        # symlink (that may lead anywhere, or loop): only the directory made here is touched.
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == identity:
            os.utime(path, (mtime, mtime), follow_symlinks=False)


class _Applier:
    def __init__(self, dest: str, keep_whiteouts: str = "") -> None:
        self.dest = dest
        self.keep_whiteouts = keep_whiteouts
        self.created: set[str] = set()
        #: each directory made, its (device, inode) and the time it is given once all is in
        self.dir_times: list[tuple[str, tuple[int, int], float]] = []
        self.root = os.geteuid() == 0

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean(member.name)
        if not name:
            return
        parent_rel, base = os.path.split(name)
        _check(member, base)
        # The parent is resolved inside the tree: ``..`` and symlinks cannot lead out of it.
        parent = str(resolve_in_root(Path(self.dest), parent_rel)) if parent_rel else self.dest
        makedirs(parent)
        if base == _OPQ or base.startswith(_WH):
            self.whiteout(parent, base)
            return
        target = os.path.join(parent, base)
        if member.isdir():
            if os.path.lexists(target) and not (
                os.path.isdir(target) and not os.path.islink(target)
            ):
                _remove(target)
            if not os.path.lexists(target):
                os.mkdir(target)
            made = os.lstat(target)
            self.dir_times.append((target, (made.st_dev, made.st_ino), member.mtime))
        elif not self.entry(tar, member, target):
            return
        self.created.add(target)
        if member.islnk():
            return
        self.metadata(member, target)

    def whiteout(self, parent: str, base: str) -> None:
        """A deletion in a lower layer; never of what this layer itself created."""
        if self.keep_whiteouts:
            if base == _OPQ:
                if self.keep_whiteouts == "overlay":
                    os.setxattr(parent, OPAQUE_XATTR, b"y")
                else:
                    open(os.path.join(parent, _OPQ), "wb").close()
            else:
                make_whiteout(parent, base[len(_WH) :], self.keep_whiteouts)
            return
        if base == _OPQ:
            for child in os.listdir(parent):
                path = os.path.join(parent, child)
                if path not in self.created:
                    _remove(path)
            return
        victim = os.path.join(parent, base[len(_WH) :])
        if victim not in self.created:
            _remove(victim)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> bool:
        """Create a non-directory entry; whether one was created."""
        if os.path.lexists(target):
            _remove(target)
        if member.isreg():
            source = tar.extractfile(member)
            with open(target, "wb") as out:
                if source is not None:
                    shutil.copyfileobj(source, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            linked = resolve_in_root(Path(self.dest), _clean(member.linkname), follow_last=False)
            os.link(linked, target)
        elif member.isfifo() or (self.root and (member.ischr() or member.isblk())):
            kind = (
                stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            )
            os.mknod(
                target, kind | (member.mode & 0o7777), os.makedev(member.devmajor, member.devminor)
            )
        else:
            return False
        return True

    def metadata(self, member: tarfile.TarInfo, target: str) -> None:
        if self.root:
            os.lchown(target, member.uid, member.gid)
        if not member.issym():
            os.chmod(target, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                with contextlib.suppress(OSError):
                    os.setxattr(
                        target,
                        key[len("SCHILY.xattr.") :],
                        value.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False,
                    )
        if not member.isdir():
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
