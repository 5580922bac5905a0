"""Modules the ``llbkit`` command's imports name but a build may never use, run at first use.

protobuf's ``descriptor_pool`` imports its pure-Python message implementation (and with it
``text_format``, ``pickle``, ``calendar``, ``locale``) whichever backend is in use; upb never
calls it. ``shutil`` imports ``bz2`` and ``lzma`` to say which archives it can make; ``inspect``
imports ``tokenize`` to read source. A warm build uses none of them: here each is a module
object whose code runs when a name other than its dunders is first asked of it (``from bz2
import BZ2File`` asks too). Until then it costs nothing; after, it is the module it would have
been, the same object (so a reference taken before stays good).

Only the ``llbkit`` command installs this; a program that imports llbkit is left as it is. It
imports nothing beyond what the interpreter's start has imported.
"""

from __future__ import annotations

import _thread
import sys

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFERRED", "install"]

#: pure-Python modules with nothing to do at import but define names
DEFERRED = frozenset(
    {
        "google.protobuf.internal.python_message",
        "tokenize",
        "bz2",
        "lzma",
        "traceback",
        "textwrap",
        "shlex",
        "base64",
    }
)

_bootstrap: Any = sys.modules["_frozen_importlib"]
_ModuleType: Any = type(sys)


class _Deferred(_ModuleType):  # type: ignore[misc]
    """A module whose code has not run yet."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # the import machinery's questions: not a use
        with self.__dict__.get("_llbkit_lock") or _thread.RLock():
            if type(self) is _Deferred:
                if self.__dict__.get("_llbkit_running"):
                    # its own code (or an import it makes) asks before it has finished: the
                    # answer a module being imported gives
                    raise AttributeError(f"partially initialized module {self.__name__!r}")
                _run(self)
        return getattr(self, attr)


def _run(module: _Deferred) -> None:
    name = module.__name__
    spec = module.__dict__.pop("_llbkit_spec")
    module.__dict__["_llbkit_running"] = True
    try:
        module.__spec__ = spec
        module.__loader__ = spec.loader
        if spec.has_location and spec.origin:
            module.__file__ = spec.origin
        spec.loader.exec_module(module)
    except BaseException:
        # as a failed import: gone from sys.modules, so the next import tries again (and
        # so does the next use of this object)
        if sys.modules.get(name) is module:
            del sys.modules[name]
        module.__dict__["_llbkit_spec"] = spec
        raise
    finally:
        module.__dict__.pop("_llbkit_running", None)
    module.__class__ = _ModuleType
    del module.__dict__["_llbkit_lock"]


class _Loader:
    def __init__(self, real: Any) -> None:
        self.real = real  # the spec an import without this would have used

    def create_module(self, spec: Any) -> _Deferred:
        module = _Deferred(spec.name)
        module.__dict__["_llbkit_spec"] = self.real
        module.__dict__["_llbkit_lock"] = _thread.RLock()  # its own: no wait on another's
        return module

    def exec_module(self, module: Any) -> None:
        return None  # at first use


class _Finder:
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.resolving: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.names or name in self.resolving:
            return None
        self.resolving.add(name)  # the spec the other finders give
        try:
            real = _bootstrap._find_spec(name, path)
        finally:
            self.resolving.discard(name)
        origin = getattr(real, "origin", None)
        if (
            real is None
            or real.submodule_search_locations is not None
            or not str(origin).endswith(".py")
        ):
            return real  # missing, a package (its __path__ is needed now), compiled: as always
        spec = _bootstrap.ModuleSpec(name, _Loader(real), origin=origin)
        spec.has_location = real.has_location  # so __file__ is there before the first use
        return spec


def install(names: frozenset[str] = DEFERRED) -> None:
    """From now on, the ``names`` not imported yet run at their first use."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(names))
