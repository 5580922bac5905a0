"""The compiled code of the modules the ``llbkit`` command imports, kept in one file.

A build imports three hundred-odd modules. For each, Python walks ``sys.path`` (a stat per
folder), opens and checks a ``.pyc`` file of its own, then reads it: about a seventh of the
import time of a build's start. Here the command's modules are kept in one file per interpreter
and ``sys.path``, each beside the size and time of its source and of the source's folder: a
module is taken from the file only when all of them are unchanged (else it is imported as
always, and the file is written again when the command ends). A folder of ``sys.path`` that
changed (a distribution installed or removed) sets the whole file aside.

Only the ``llbkit`` command installs this; a program that imports llbkit is left as it is. It
imports nothing beyond what the interpreter's start has imported: the daemon's light client
uses it too.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from types import CodeType, ModuleType
    from typing import Any

__all__ = ["install"]

_MAGIC = b"llbkit-modules\x001\n"
#: past this size the file starts over with what one command used (stale modules go)
LIMIT = 48 << 20

# The machinery's own module: always loaded, and importing ``importlib`` would cost more.
_bootstrap: Any = sys.modules["_frozen_importlib"]
_external: Any = sys.modules["_frozen_importlib_external"]

#: (origin, is a package, source mtime_ns, source size, folder mtime_ns, offset, length)
_Entry = tuple[str, bool, int, int, int, int, int]


def _key() -> str:
    """What decides which files a name imports, and what code they compile to (FNV-1a:
    a checksum module's import would cost more than this loop)."""
    text = "\0".join([sys.version, sys.prefix, str(sys.flags.optimize), *sys.path])
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{sys.implementation.cache_tag}-{value:016x}"


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


#: the type of compiled code (``types`` is not imported for it)
_CODE = type(_mtime.__code__)


class _Loader:
    """Runs one module's kept code; otherwise answers as the file loader would."""

    def __init__(self, name: str, origin: str, code: bytes, finder: _Finder) -> None:
        self.name = name
        self.path = origin
        self._code: bytes | None = code
        self._finder = finder

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(self.name), module.__dict__)

    def get_code(self, name: str) -> CodeType:
        kept, self._code = self._code, None  # held once: a second ask reads the source's
        try:
            code = marshal.loads(kept) if kept is not None else None
        except (ValueError, EOFError, TypeError):
            code = None
        if isinstance(code, _CODE):
            return code
        if kept is not None:  # damaged: imported as always, and the file written again
            self._finder.taken.discard(name)
        return _external.SourceFileLoader(name, self.path).get_code(name)  # type: ignore[no-any-return]

    def get_filename(self, name: str | None = None) -> str:
        return self.path

    def get_source(self, name: str) -> str:
        return _external.SourceFileLoader(name, self.path).get_source(name)  # type: ignore[no-any-return]

    def get_data(self, path: str) -> bytes:
        with open(path, "rb") as data:
            return data.read()

    def is_package(self, name: str) -> bool:
        return os.path.basename(self.path) == "__init__.py"

    def get_resource_reader(self, name: str) -> Any:
        return _external.SourceFileLoader(name, self.path).get_resource_reader(name)


class _Finder:
    """Finds the modules of the kept file whose source, and folder, are as they were."""

    def __init__(self, path: str, fd: int, index: dict[str, _Entry]) -> None:
        self.path = path
        self.fd = fd
        self.index = index
        self.folders: dict[str, int] = {}
        self.taken: set[str] = set()
        #: imported before this was installed (the command's first modules): never taken
        self.earlier = set(sys.modules)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        entry = self.index.get(name)
        if entry is None:
            return None
        try:
            return self._kept(name, path, *entry)
        except (TypeError, ValueError):  # an entry of a damaged file: imported as always
            return None

    def _kept(
        self,
        name: str,
        path: Any,
        origin: str,
        package: bool,
        mtime: int,
        size: int,
        folder_mtime: int,
        offset: int,
        length: int,
    ) -> Any:
        folder = os.path.dirname(origin)
        if path is not None and folder not in path and os.path.dirname(folder) not in path:
            return None  # a parent whose __path__ is not where the kept code was found
        if self.folders.get(folder) is None:
            self.folders[folder] = _mtime(folder)
        try:
            stat = os.stat(origin)
            code = os.pread(self.fd, length, offset)
        except OSError:
            return None
        if (stat.st_mtime_ns, stat.st_size, self.folders[folder]) != (mtime, size, folder_mtime):
            return None
        if len(code) != length:
            return None
        spec = _bootstrap.ModuleSpec(
            name, _Loader(name, origin, code, self), origin=origin, is_package=package
        )
        if package:
            spec.submodule_search_locations = [folder]
        spec.has_location = True
        self.taken.add(name)
        return spec

    def save(self) -> None:
        """Written again when a module this command imported from a source file was not
        taken from it."""
        loaded = {
            name: _origin(module)
            for name, module in list(sys.modules.items())
            if name not in self.earlier
        }
        if all(origin is None or name in self.taken for name, origin in loaded.items()):
            return
        index: dict[str, _Entry] = {}
        blobs: list[bytes] = []
        offset = 0

        def add(name: str, origin: str, code: bytes | None) -> None:
            nonlocal offset
            if code is None:
                return
            try:
                stat = os.stat(origin)
            except OSError:
                return
            folder = os.path.dirname(origin)
            package = os.path.basename(origin) == "__init__.py"
            entry = (origin, package, stat.st_mtime_ns, stat.st_size, _mtime(folder))
            index[name] = (*entry, offset, len(code))
            blobs.append(code)
            offset += len(code)

        for name, origin in loaded.items():
            if origin is not None:
                add(name, origin, _compiled(self, name, origin))
        if offset <= LIMIT:
            for name, entry in self.index.items():  # other commands' modules, still valid
                if name not in index and _valid(entry):
                    add(name, entry[0], _read(self.fd, entry))
        _write(self.path, index, blobs)


def _origin(module: ModuleType) -> str | None:
    """The source file of a module loaded from one (as the file loader or from the file)."""
    spec = getattr(module, "__spec__", None)
    loader = getattr(spec, "loader", None)
    if type(loader) is not _Loader and type(loader) is not _external.SourceFileLoader:
        return None
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and origin.endswith(".py") else None


def _compiled(finder: _Finder, name: str, origin: str) -> bytes | None:
    entry = finder.index.get(name)
    if name in finder.taken and entry is not None and _valid(entry):
        return _read(finder.fd, entry)
    try:
        code = _external.SourceFileLoader(name, origin).get_code(name)
    except (OSError, SyntaxError, ImportError, ValueError):
        return None
    return marshal.dumps(code) if code is not None else None


def _valid(entry: _Entry) -> bool:
    origin, _, mtime, size, folder_mtime, _, _ = entry
    try:
        stat = os.stat(origin)
    except OSError:
        return False
    return (stat.st_mtime_ns, stat.st_size) == (mtime, size) and _mtime(
        os.path.dirname(origin)
    ) == folder_mtime


def _read(fd: int, entry: _Entry) -> bytes | None:
    if fd < 0:
        return None
    try:
        code = os.pread(fd, entry[6], entry[5])
    except OSError:
        return None
    return code if len(code) == entry[6] else None


def _folders() -> list[tuple[str, int]]:
    return [(entry, _mtime(entry)) for entry in sys.path]


def _write(path: str, index: dict[str, _Entry], blobs: list[bytes]) -> None:
    """The file: a mark, the index's length, the index (offsets from the end of the index),
    then the code of each module."""
    from llbkit.core.cachedir import write_cache_file

    head = marshal.dumps((_folders(), index))
    data = b"".join([_MAGIC, len(head).to_bytes(8, "little"), head, *blobs])
    if write_cache_file(path, data):
        _forget_others(path)


#: a kept file of another interpreter or path not written for this long is removed
STALE = 30 * 86400


def _forget_others(path: str) -> None:
    """The files of environments gone or unused (each is a few MB) do not pile up."""
    folder, own = os.path.split(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith("modules-") and name != own:
            other = os.path.join(folder, name)
            try:
                if os.stat(other).st_mtime < os.stat(path).st_mtime - STALE:
                    os.unlink(other)
            except OSError:
                continue


def _open(path: str) -> tuple[int, dict[str, _Entry]]:
    """The kept file's descriptor and index, the offsets made absolute; ``(-1, {})`` when
    it is missing, damaged, another user's or made for folders that changed since."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1, {}
    try:
        stat = os.fstat(fd)
        # Code another user could have written is not run in this process.
        if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
            raise ValueError(path)
        start = os.pread(fd, len(_MAGIC) + 8, 0)
        if not start.startswith(_MAGIC) or len(start) != len(_MAGIC) + 8:
            raise ValueError(path)
        size = int.from_bytes(start[len(_MAGIC) :], "little")
        folders, index = marshal.loads(os.pread(fd, size, len(start)))
        if folders != _folders() or not isinstance(index, dict):
            raise ValueError(path)
        base = len(start) + size
        return fd, {name: (*e[:5], e[5] + base, e[6]) for name, e in index.items()}
    except (OSError, ValueError, EOFError, TypeError, IndexError):
        os.close(fd)
        return -1, {}


def install(directory: str | None) -> None:
    """From now on, modules are taken from the file kept in ``directory`` when they can be
    (nothing is kept when it is ``None``)."""
    if directory is None or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    if not all(os.path.isabs(entry) for entry in sys.path):
        return  # the working directory is on the path (``python -c``): it changes too often
    import atexit

    path = os.path.join(directory, f"modules-{_key()}.bin")
    fd, index = _open(path)
    finder = _Finder(path, fd, index)
    sys.meta_path.insert(0, finder)
    atexit.register(finder.save)
