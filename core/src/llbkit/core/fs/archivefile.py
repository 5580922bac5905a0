"""An archive output written whole or not at all: into a new file beside ``dest``, renamed
over it once complete, removed on any failure. Both clients write their archives so (the
embedded one, and the daemon's light client, which this module keeps light for)."""

from __future__ import annotations

import contextlib
import os
import threading

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

__all__ = ["TERMINAL", "Held", "archive_file"]

#: why an archive is not written to standard output that is a terminal
TERMINAL = "refusing to write an archive to a terminal; set dest=<file> or redirect standard output"


class Held:
    """Archives received whole, placed only once their build succeeds: BuildKit's daemon ends
    an output's stream as if complete when its exporter fails midway, so a client that
    renamed at the stream's end would leave a cut archive in place of the old one. One per
    build; once placed or discarded it takes no more (a late one is removed)."""

    def __init__(self, partial: set[str] | None = None) -> None:
        self.partial = partial
        self.files: list[tuple[str, str, str]] = []  # (temporary, target, dest as given)
        self.closed = False
        self._lock = threading.Lock()  # the light client's handlers hand files in from threads

    def keep(self, tmp: str, target: str, dest: str) -> bool:
        """Hold ``tmp`` for ``target``; False once the build is over (the caller removes it)."""
        with self._lock:
            if self.closed:
                return False
            self.files.append((tmp, target, dest))
            return True

    @contextlib.contextmanager
    def settled(self, error: Callable[[str], Exception]) -> Iterator[None]:
        """Around a build: what it sent is placed if the block ends normally, removed if not
        (and a file that comes after is refused either way)."""
        try:
            yield
            self.place(error)
        finally:
            self.discard()

    def place(self, error: Callable[[str], Exception]) -> None:
        """Rename each over its destination (the build succeeded); if one cannot be, the
        rest are removed and ``error(said)`` raised."""
        files = self._take()
        try:
            while files:
                tmp, target, dest = files[0]
                _place(tmp, target, dest, error)
                self._forget(tmp)
                files.pop(0)
        finally:
            self._remove(files)

    def discard(self) -> None:
        """Remove what is held (the build failed)."""
        self._remove(self._take())

    def _take(self) -> list[tuple[str, str, str]]:
        with self._lock:
            files, self.files, self.closed = self.files, [], True
        return files

    def _remove(self, files: list[tuple[str, str, str]]) -> None:
        for tmp, _, _ in files:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._forget(tmp)

    def _forget(self, tmp: str) -> None:
        if self.partial is not None:
            self.partial.discard(tmp)


@contextlib.contextmanager
def archive_file(
    dest: str,
    error: Callable[[str], Exception],
    partial: set[str] | None = None,
    held: Held | None = None,
) -> Iterator[BinaryIO]:
    """A new file beside ``dest`` to write the archive into, renamed over ``dest`` when the
    block ends (or, given ``held``, when it is placed) and removed if it fails. Making or
    placing the file fails as ``error(said)``; what the block raises passes unchanged.
    ``partial`` lists the file while it is not in place (for a process that may leave
    without unwinding)."""
    import tempfile  # only for a build that sends an archive: a start pays for its use

    target = os.path.abspath(dest)
    folder, name = os.path.split(target)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    except OSError as err:
        raise error(f"cannot write {dest}: {err.strerror}") from None
    if partial is not None:
        partial.add(tmp)
    kept = False
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        if held is not None:
            kept = held.keep(tmp, target, dest)
            if not kept:  # its build is over already
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        _place(tmp, target, dest, error)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if partial is not None and not kept:
            partial.discard(tmp)


def _place(tmp: str, target: str, dest: str, error: Callable[[str], Exception]) -> None:
    """The whole file over ``target``, readable as a file made by hand is."""
    try:
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:  # e.g. a directory was made there meanwhile
        raise error(f"cannot write {dest}: {err.strerror}") from None
