"""Which command lines the light client takes: exactly the builds it serves as the full CLI
would; everything else (and anything the full CLI would judge) goes to the full CLI."""

from __future__ import annotations

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
    ["tcp://127.0.0.1:1234", "unix://", "unix://relative/sock", "unix:///s?x=1", "fd://3", ""],
)
def test_only_a_plain_unix_socket_is_taken(base: list[str], address: str) -> None:
    assert _parse(["--addr", address, *base[2:]]) is None


def test_without_a_frontend_or_a_command_it_is_the_full_cli(base: list[str]) -> None:
    assert _parse([a for a in base if a not in ("--frontend", "dockerfile.v0")]) is None
    assert _parse(["--addr", "unix:///s", "du"]) is None
    assert _parse(["--root", "/tmp/r", *base[2:]]) is None


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
