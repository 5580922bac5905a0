"""A deferred module's code runs at its first use, once, into the module object the import
gave; until then the import machinery's own questions do not run it."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llbkit.core.cli.deferred import _Deferred, _Finder

_NAMES = ("lazy_one", "lazy_broken", "lazy_slow", "lazy_self", "lazy_pkg", "lazy_missing")


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "runs.py").write_text("RUNS = []\n")
    (tmp_path / "lazy_one.py").write_text(
        "import runs\nruns.RUNS.append('one')\nVALUE = 42\ndef twice(x):\n    return 2 * x\n"
    )
    (tmp_path / "lazy_broken.py").write_text("import runs\nruns.RUNS.append('broken')\n1 / 0\n")
    (tmp_path / "lazy_slow.py").write_text(
        "import runs, time\nruns.RUNS.append('slow')\ntime.sleep(0.2)\nVALUE = 'slow'\n"
    )
    (tmp_path / "lazy_self.py").write_text(
        "import lazy_self\ntry:\n    lazy_self.LATER\nexcept AttributeError as err:\n"
        "    SEEN = str(err)\nLATER = 1\n"
    )
    (tmp_path / "lazy_pkg").mkdir()
    (tmp_path / "lazy_pkg" / "__init__.py").write_text("import runs\nruns.RUNS.append('pkg')\n")
    finder = _Finder(frozenset(_NAMES))
    sys.path.insert(0, str(tmp_path))
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        sys.meta_path.remove(finder)
        sys.path.remove(str(tmp_path))
        for name in (*_NAMES, "runs"):
            sys.modules.pop(name, None)


def _runs() -> list[str]:
    return list(sys.modules["runs"].RUNS)


def test_the_code_runs_at_the_first_use_once_into_the_same_object(modules: Path) -> None:
    import lazy_one
    import runs

    assert type(lazy_one) is _Deferred
    assert runs.RUNS == []
    # what the import machinery and tools ask is not a use
    assert lazy_one.__name__ == "lazy_one"
    assert lazy_one.__file__ == str(modules / "lazy_one.py")
    assert not hasattr(lazy_one, "__path__")
    assert runs.RUNS == []

    assert lazy_one.VALUE == 42
    assert runs.RUNS == ["one"]
    assert type(lazy_one) is type(sys)
    assert sys.modules["lazy_one"] is lazy_one
    assert lazy_one.__spec__.origin == str(modules / "lazy_one.py")

    from lazy_one import twice

    assert twice(4) == 8
    assert runs.RUNS == ["one"]


def test_from_import_is_a_use(modules: Path) -> None:
    from lazy_one import VALUE

    assert VALUE == 42
    assert _runs() == ["one"]


def test_a_module_that_fails_fails_at_its_first_use_and_is_tried_again(modules: Path) -> None:
    import lazy_broken

    with pytest.raises(ZeroDivisionError):
        lazy_broken.anything  # noqa: B018
    assert "lazy_broken" not in sys.modules
    with pytest.raises(ZeroDivisionError):
        from lazy_broken import anything  # noqa: F401
    assert _runs() == ["broken", "broken"]


def test_a_missing_name_is_still_missing_at_the_import(modules: Path) -> None:
    with pytest.raises(ModuleNotFoundError):
        import lazy_missing  # noqa: F401


def test_a_package_is_imported_as_always(modules: Path) -> None:
    import lazy_pkg

    assert type(lazy_pkg) is type(sys)
    assert _runs() == ["pkg"]


def test_threads_using_it_at_once_run_it_once(modules: Path) -> None:
    import lazy_slow

    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(lazy_slow.VALUE)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["slow"] * 4
    assert _runs() == ["slow"]


def test_its_own_code_sees_it_as_a_module_being_imported(modules: Path) -> None:
    import lazy_self

    assert lazy_self.LATER == 1
    assert "partially initialized module 'lazy_self'" in lazy_self.SEEN
