"""Dataclass methods compiled once and kept: the classes behave exactly as without the cache,
a second process compiles nothing, and a file that cannot be trusted or read is not used."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each run prints what its classes do, and how many texts it had to compile.
PROGRAM = r"""
import dataclasses, json, sys
from typing import ClassVar

if sys.argv[1] != "-":
    from pathlib import Path
    from llbkit.core.cli.codecache import install
    install(Path(sys.argv[1]))

@dataclasses.dataclass(frozen=True)
class Point:
    "a frozen record"
    x: int
    y: "tuple[int, ...]" = dataclasses.field(default=(), repr=False)
    label: str = "p"
    count: ClassVar[int] = 0

@dataclasses.dataclass(kw_only=True, slots=True, order=True)
class Job:
    name: str
    retries: int = 3
    extra: dict = dataclasses.field(default_factory=dict, compare=False)

@dataclasses.dataclass
class Child(Job):
    seen: dataclasses.InitVar[bool] = False
    def __post_init__(self, seen):
        self.retries += int(seen)

p, q = Point(1, (2,)), Point(1, (2,))
try:
    p.x = 5
    frozen = "assignable"
except dataclasses.FrozenInstanceError as err:
    frozen = type(err).__name__
out = {
    "repr": [repr(p), repr(Job(name="a")), repr(Child(name="c", seen=True))],
    "eq": [p == q, hash(p) == hash(q), Job(name="a") < Job(name="b")],
    "frozen": frozen,
    "annotations": [str(v) for v in Point.__init__.__annotations__.values()],
    "defaults": [Point.__init__.__defaults__, Job.__init__.__kwdefaults__ is not None],
    "slots": hasattr(Job, "__slots__"),
    "compiled": getattr(getattr(dataclasses, "exec", None), "__self__", None).added
    if hasattr(dataclasses, "exec") else None,
}
print(json.dumps(out, default=str))
"""


def _run(cache: Path | str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(cache)], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _without_count(result: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in result.items() if k != "compiled"}


def test_kept_code_makes_the_same_classes_and_is_compiled_once(tmp_path: Path) -> None:
    plain = _run("-")
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert _without_count(first) == _without_count(second) == _without_count(plain)
    assert plain["frozen"] == "FrozenInstanceError"
    assert "<class 'int'>" in plain["annotations"]  # type: ignore[operator]  # objects, not text
    assert isinstance(first["compiled"], int) and first["compiled"] > 0
    assert second["compiled"] == 0  # everything came from the file
    (kept,) = tmp_path.glob("dataclass-code-*.marshal")
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_damaged_file_is_compiled_over(tmp_path: Path) -> None:
    _run(tmp_path)
    (kept,) = tmp_path.glob("dataclass-code-*.marshal")
    kept.write_bytes(b"\xe3 not marshal data")
    kept.chmod(0o600)
    assert _run(tmp_path)["compiled"] != 0
    assert _run(tmp_path)["compiled"] == 0  # written again, whole
    # entries that do not unmarshal to code (damaged, or not code at all) are compiled again
    entries = marshal.loads(kept.read_bytes())
    bad = [b"\x00 damaged", marshal.dumps("print('not code')"), marshal.dumps(42)]
    kept.write_bytes(marshal.dumps({k: bad[n % 3] for n, k in enumerate(entries)}))
    assert _run(tmp_path)["compiled"] == len(entries)
    assert _without_count(_run(tmp_path)) == _without_count(_run("-"))


def test_a_file_others_could_write_is_not_run(tmp_path: Path) -> None:
    _run(tmp_path)
    (kept,) = tmp_path.glob("dataclass-code-*.marshal")
    kept.chmod(0o666)
    assert _run(tmp_path)["compiled"] != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
def test_a_file_another_user_owns_is_not_run(tmp_path: Path) -> None:
    _run(tmp_path)
    (kept,) = tmp_path.glob("dataclass-code-*.marshal")
    os.chown(kept, 65534, 65534)
    assert _run(tmp_path)["compiled"] != 0


def test_the_cli_keeps_its_classes_code_unless_caches_are_off(tmp_path: Path) -> None:
    llbkit = Path(sys.executable).with_name("llbkit")
    for setting in (str(tmp_path / "on"), "off"):
        env = {**os.environ, "LLBKIT_PLUGIN_CACHE": setting, "XDG_CACHE_HOME": str(tmp_path)}
        subprocess.run(
            [llbkit, "--root", str(tmp_path / "root"), "du"],
            env=env,
            check=True,
            capture_output=True,
            cwd=tmp_path,
        )
    found = list(tmp_path.rglob("dataclass-code-*.marshal"))
    assert [p.parent for p in found] == [tmp_path / "on"]  # off: nowhere, not in ./off either


def test_a_damaged_cache_file_is_ignored_then_replaced(tmp_path: Path) -> None:
    """A cache file cut short (a disk full, a crash of an older writer) is read as empty,
    not as an error, and the next save replaces it whole, which the next process reads."""
    from llbkit.core.cli.codecache import _Kept

    path = tmp_path / "cache" / "dataclass-code-test.marshal"
    path.parent.mkdir()
    whole = marshal.dumps({"def f(): pass": marshal.dumps(compile("pass", "<s>", "exec"))})
    path.write_bytes(whole[: len(whole) // 2])
    path.chmod(0o600)
    kept = _Kept(path)
    assert kept.codes == {}
    kept.exec("def f(): pass", {}, {})  # one entry to save
    kept.save()
    assert list(_Kept(path).codes) == ["def f(): pass"]
