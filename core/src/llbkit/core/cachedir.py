"""Where llbkit keeps what only saves time (the entry-point index, compiled generated code):
``$LLBKIT_PLUGIN_CACHE``, else ``$XDG_CACHE_HOME/llbkit``, else ``~/.cache/llbkit``; ``off``
keeps nothing. Losing any of it costs speed, never a result."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # pathlib's import is more than the daemon's light client needs
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir", "cache_folder", "write_cache_file"]

#: where the caches live (a directory); ``off`` recomputes everything and writes nothing
CACHE_ENV = "LLBKIT_PLUGIN_CACHE"


def cache_dir() -> Path | None:
    from pathlib import Path

    folder = cache_folder()
    return None if folder is None else Path(folder)


def cache_folder() -> str | None:
    """:func:`cache_dir`, as a string."""
    configured = os.environ.get(CACHE_ENV, "")
    if configured == "off":
        return None
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llbkit")


def write_cache_file(path: str | os.PathLike[str], data: bytes) -> bool:
    """Replace ``path`` with ``data`` whole, readable by this user alone (a new file of a
    random name, renamed over it); whether it was written. An unwritable cache (read-only
    home, full disk) costs only speed: nothing is raised. Only ``os``: the daemon's light
    client writes its module file with it at exit."""
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
