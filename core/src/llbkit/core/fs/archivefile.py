"""An archive output written whole or not at all: into a new file beside ``dest``, renamed
over it once complete, removed on any failure. Both clients write their archives so (the
embedded one, and the daemon's light client, which this module keeps light for)."""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

__all__ = ["TERMINAL", "archive_file"]

#: why an archive is not written to standard output that is a terminal
TERMINAL = "refusing to write an archive to a terminal; set dest=<file> or redirect standard output"


@contextlib.contextmanager
def archive_file(
    dest: str, error: Callable[[str], Exception], partial: set[str] | None = None
) -> Iterator[BinaryIO]:
    """A new file beside ``dest`` to write the archive into, renamed over ``dest`` when the
    block ends and removed if it fails. Making or placing the file fails as ``error(said)``;
    what the block raises passes unchanged. ``partial`` lists the file while it is not whole
    (for a process that may leave without unwinding)."""
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
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as err:  # e.g. a directory was made there meanwhile
            raise error(f"cannot write {dest}: {err.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if partial is not None:
            partial.discard(tmp)
