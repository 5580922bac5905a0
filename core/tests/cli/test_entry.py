"""Which command lines the light client takes: exactly the builds it serves as the full CLI
would; everything else (and anything the full CLI would judge) goes to the full CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llbkit.core.cli.entry import _parse


@pytest.fixture
def base(tmp_path: Path) -> list[str]:
    return [
        "--addr",
        "unix:///run/llbkit/llbkitd.sock",
        "build",
        "--progress=quiet",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={tmp_path}",
        "--local",
        f"dockerfile={tmp_path}",
    ]


def test_a_daemon_build_with_daemon_side_outputs_and_caches_is_taken(base: list[str]) -> None:
    plan = _parse(
        [
            *base,
            "--opt",
            "build-arg:A=1",
            "--opt",
            "no-value",
            "-o",
            "type=image,name=r/app:1,push=true",
            "--export-cache",
            "type=registry,ref=r/c,mode=max",
            "--import-cache",
            "type=s3,Bucket=b,name=n",
            "--allow",
            "network.host",
            "--no-cache",
            "--metadata-file",
            "md.json",
            "--trace",
            "t.json",
        ]
    )
    assert plan is not None
    assert plan.opts == {"build-arg:A": "1", "no-value": ""}
    assert plan.exporters == [("image", {"name": "r/app:1", "push": "true"})]
    assert plan.cache_exports == [("registry", {"ref": "r/c", "mode": "max"})]
    assert plan.cache_imports == [("s3", {"bucket": "b", "name": "n"})]  # keys as buildctl's
    assert plan.entitlements == ["network.host"] and plan.no_cache
    assert plan.metadata_file == "md.json" and plan.progress == "quiet"
    assert plan.trace == "t.json"


@pytest.mark.parametrize(
    "extra",
    [
        ["--progress", ""],
        ["--progress", "fancy"],
        ["--output", "type=local"],
        ["--output", "type=image,name=x,bad"],  # not key=value: the full CLI says so
        ["--export-cache", "type=local,dest=d"],
        ["--import-cache", "r/cache:1"],  # deprecated form: the full CLI warns
        ["--secret", "id=a,src=/nonexistent"],
        ["--ssh", "default"],
        ["--allow", "everything"],
        ["--trace", "/"],  # a directory: the full CLI says so
        ["--oci-layout", "a=b"],
        ["--local", "other=/nonexistent"],
        ["--opt", "=v"],
        ["--opt", "k=\u00e9"],
        ["definition.pb"],
        ["-h"],
        ["--help"],
        ["--frontend"],  # no value
    ],
)
def test_anything_else_goes_to_the_full_cli(base: list[str], extra: list[str]) -> None:
    assert _parse([*base, *extra]) is None


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:1234", "unix://", "unix://relative/sock", "unix:///s?x=1", "fd://3"],
)
def test_only_a_plain_unix_socket_is_taken(base: list[str], address: str) -> None:
    assert _parse(["--addr", address, *base[2:]]) is None


def test_without_a_daemon_the_embedded_engine_takes_the_build(
    base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No address (nor ``$BUILDKIT_HOST``): the same build, on the engine in this process,
    with ``--root`` and ``--config`` as click would take them."""
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)
    config = tmp_path / "llbkit.toml"
    config.write_text("")
    plan = _parse(
        [
            "--root",
            str(tmp_path / "r"),
            "--config",
            str(config),
            *base[2:],
            "-o",
            "type=tar,dest=o.tar",
        ]
    )
    assert plan is not None and plan.address == ""
    assert plan.root == str(tmp_path / "r") and plan.config == str(config)
    assert plan.given["--output"] == ["type=tar,dest=o.tar"]
    assert _parse(["--addr", "", *base[2:]]) is not None  # an empty address is no daemon
    # What click refuses, or reads its own way, goes to it.
    assert _parse(["--root", str(config), *base[2:]]) is None  # a file as the root
    assert _parse(["--config", str(tmp_path / "none.toml"), *base[2:]]) is None
    assert _parse(["--config", str(tmp_path), *base[2:]]) is None  # a directory
    assert _parse(["--root", str(tmp_path), *base]) is None  # with a daemon address
    assert _parse([*base[2:], "--config", str(config)]) is None  # build's own --config


def test_without_a_frontend_or_a_command_it_is_the_full_cli(base: list[str]) -> None:
    assert _parse([a for a in base if a not in ("--frontend", "dockerfile.v0")]) is None
    assert _parse(["--addr", "unix:///s", "du"]) is None
    assert _parse(["--root", "/tmp/r", "du"]) is None


def test_a_shared_key_names_the_directories_not_how_they_are_written(tmp_path: Path) -> None:
    """The daemon keeps a client's directories under its shared key: the same directories
    give the same key however their paths are written, other directories another."""
    from llbkit.core.session.methods import shared_key

    (tmp_path / "b").mkdir()
    dirs = {"context": str(tmp_path), "dockerfile": str(tmp_path / "b")}
    key = shared_key(dirs)
    assert shared_key({**dirs, "context": f"{tmp_path}/b/.."}) == key
    assert shared_key({"context": str(tmp_path)}) != key
    assert len(key) == 32


#: a command line through the ``llbkit`` command's first step, or straight to the full CLI
_THROUGH = {
    "entry": "from llbkit.core.cli.entry import run; run()",
    "click": "from llbkit.core.cli.main import run; run()",
}


def _llbkit(how: str, *argv: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; sys.argv = ['llbkit', *sys.argv[1:]]; {_THROUGH[how]}"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )


def test_an_embedded_build_taken_without_click_does_what_the_full_cli_does(
    tmp_path: Path,
) -> None:
    """The same files, the same metadata, and for a failure the same lines, whichever way
    the command line went."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    common = ["--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
    common += ["--local", f"dockerfile={ctx}", "--progress", "quiet"]
    done = {}
    for how in _THROUGH:
        out, meta = tmp_path / f"out-{how}", tmp_path / f"{how}.json"
        argv = ["--root", str(tmp_path / "root"), "build", *common]
        argv += ["-o", f"type=local,dest={out}", "--metadata-file", str(meta)]
        ran = _llbkit(how, *argv)
        assert ran.returncode == 0, ran.stderr
        done[how] = ((out / "a.txt").read_text(), json.loads(meta.read_text()))
    assert done["entry"] == done["click"]
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /m\n")
    failed = {
        how: _llbkit(how, "--root", str(tmp_path / "root"), "build", *common) for how in _THROUGH
    }
    assert failed["entry"].returncode == failed["click"].returncode == 1
    assert failed["entry"].stderr == failed["click"].stderr
    assert failed["entry"].stderr.splitlines()[-1].startswith("error: "), failed["entry"].stderr


def test_the_collector_is_off_for_the_start_and_back_for_the_build(tmp_path: Path) -> None:
    """Start-up's objects live as long as the process: the command starts with the cyclic
    collector off, then freezes them and turns it back on when the build runs (a long
    build's garbage is collected); a program importing llbkit keeps its collector as it is."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    spy = (
        "import gc, sys\n"
        "from llbkit.core.cli import engine, entry\n"
        "parse, solve = entry._parse, engine._solve\n"
        "def parsing(argv):\n"
        "    print('start', gc.isenabled(), file=sys.stderr)\n"
        "    return parse(argv)\n"
        "async def solving(*args):\n"
        "    print('build', gc.isenabled(), gc.get_freeze_count() > 1000, file=sys.stderr)\n"
        "    return await solve(*args)\n"
        "entry._parse, engine._solve = parsing, solving\n"
        "sys.argv = ['llbkit', *sys.argv[1:]]\n"
        "entry.run()\n"
    )
    argv = ["--root", str(tmp_path / "root"), "build", "--frontend", "dockerfile.v0"]
    argv += ["--local", f"context={ctx}", "--local", f"dockerfile={ctx}", "--progress", "quiet"]
    ran = subprocess.run(
        [sys.executable, "-c", spy, *argv], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines()[:2] == ["start False", "build True True"]
    imported = subprocess.run(
        [sys.executable, "-c", "import gc, llbkit.core.cli.engine; print(gc.isenabled())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.stdout.strip() == "True"
