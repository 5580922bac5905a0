"""The methods ``dataclasses`` generates, compiled once per interpreter and kept on disk.

Creating a dataclass compiles its ``__init__``, ``__repr__``, ``__eq__`` and, when frozen,
``__hash__``, ``__setattr__`` and ``__delattr__`` from source text (through ``exec``), every
time the class is made: on Python 3.11 about 0.3 ms a class, which for the hundred-odd classes
a build imports is 30 to 45 ms of a 0.2 s warm build. The text is all that decides the code,
so the compiled code is kept, keyed by its text, in one file per interpreter version; a later
process runs the kept code instead of compiling it again. The functions that result are the
ones compiling would have made.

Only the ``llbkit`` command installs this; a program that imports llbkit is left as it is.
"""

from __future__ import annotations

import atexit
import builtins
import dataclasses
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

from llbkit.core.cachedir import write_cache_file

__all__ = ["install"]

#: past this many kept texts the file starts over (a stale checkout's classes linger otherwise)
LIMIT = 4000


class _Kept:
    """The code kept for one interpreter: read at start, written back if anything was added.
    Each code object stays marshalled until a class asks for it: the file holds every shape
    any command made, and a command uses a few of them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, bytes] = _read(path)
        self.used: dict[str, bytes] = {}
        self.added = 0

    def exec(self, source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            code = _code(self.codes.get(source))
            if code is None:
                # dont_inherit: compiled as dataclasses' own exec compiles it, without this
                # module's __future__ flags (annotations would become strings)
                code = compile(source, "<string>", "exec", dont_inherit=True)
                self.codes[source] = marshal.dumps(code)
                self.added += 1
            self.used[source] = self.codes[source]
            source = code
        builtins.exec(source, globals, locals)

    def save(self) -> None:
        if not self.added:
            return
        # Past the limit, only what this process used is kept (a stale checkout's go).
        codes = self.codes if len(self.codes) <= LIMIT else self.used
        write_cache_file(self.path, marshal.dumps(codes))


def _code(kept: bytes | None) -> CodeType | None:
    """A kept entry as code, or ``None`` (absent, or not code: compiled again)."""
    if kept is None:
        return None
    try:
        code = marshal.loads(kept)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _read(path: Path) -> dict[str, bytes]:
    try:
        with open(path, "rb") as source:
            # Code another user could have written is not run in this process.
            stat = os.fstat(source.fileno())
            if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
                return {}
            found = marshal.load(source)
    # Missing, damaged or from another interpreter: compiled afresh and written again.
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, bytes)}


def install(directory: Path | None) -> None:
    """From now on, dataclasses created in this process use the code kept in ``directory``
    (nothing is kept when it is ``None``)."""
    if directory is None or "exec" in vars(dataclasses):
        return
    # A marshal file is read back only by the interpreter version that wrote it.
    tag = f"{sys.implementation.cache_tag}-{sys.version_info.releaselevel}{sys.hexversion:x}"
    kept = _Kept(directory / f"dataclass-code-{tag}.marshal")
    dataclasses.exec = kept.exec  # type: ignore[attr-defined]
    atexit.register(kept.save)
