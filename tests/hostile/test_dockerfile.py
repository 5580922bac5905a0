"""Hostile and mistaken Dockerfiles: unknown mount keys named with the key meant, a scratch
stage of LABELs built as BuildKit builds it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import anyio
import pytest

from llbkit.plugins.frontend_dockerfile.convert import BuildOptions, convert
from llbkit.plugins.frontend_dockerfile.parser import DockerfileError, parse
from llbkit.sdk import llb
from tests.hostile.cli import dockerfile_build, error_line


async def _no_images(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    raise AssertionError(f"no image to resolve here: {ref}")


def converted_error(text: str) -> str:
    with pytest.raises(DockerfileError) as err:
        anyio.run(convert, parse(text), BuildOptions(), _no_images)
    return str(err.value)


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        # BuildKit v0.11.6's words for each (checked with its buildctl).
        (
            "type=cache,target=/x,sharng=locked",
            "unexpected key 'sharng' in 'sharng=locked' (did you mean sharing?)",
        ),
        ("type=bind,uidd=0", "unexpected key 'uidd' in 'uidd=0' (did you mean uid?)"),
        # v0.11.6 has no secrets as environment variables (env= came in a later Dockerfile).
        ("type=secret,id=s,env=FOO", "unexpected key 'env' in 'env=FOO'"),
        ("type=bind,target=/x,foo", "invalid field 'foo' must be a key=value pair"),
        ("type=bind,target=/x,mode=0700", 'mode not allowed for "bind" type mounts'),
        ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
        ("type=cache,target=/x,size=1m", "unexpected key 'size' for mount type 'cache'"),
    ],
)
def test_mount_keys_are_checked_as_buildkit_checks_them(mount: str, message: str) -> None:
    text = converted_error(f"FROM scratch\nRUN --mount={mount} true\n")
    assert text == f"Dockerfile:2: {message}"


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        # BuildKit v0.11.6's words for each (checked with its buildctl); each was a traceback.
        ("type=tmpfs,target=/t,size=abc", "invalid value for size: abc"),
        ("type=ssh,target=/s,mode=abc", "invalid value abc for mode"),
        ("type=secret,id=s,gid=x", "invalid value x for gid"),
        ("type=cache,target=/c,uid=-1", "invalid value -1 for uid"),
        ("type=cache,target=/c,mode=0999", "invalid value 0999 for mode"),
        ("type=cache,target=/c,sharing=bogus", 'unsupported sharing value "bogus"'),
        ("type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
    ],
)
def test_mount_values_are_checked_as_buildkit_checks_them(mount: str, message: str) -> None:
    text = converted_error(f"FROM scratch\nRUN --mount={mount} true\n")
    assert text == f"Dockerfile:2: {message}"


def test_a_heredoc_alone_names_no_destination() -> None:
    assert converted_error("FROM scratch\nCOPY <<EOF\nEOF\n").endswith(
        "COPY requires at least two arguments, but only one was provided. "
        "Destination could not be determined"
    )


@pytest.mark.parametrize(
    "mount",
    [
        "type=tmpfs,target=/t,size=1.5GiB",
        "type=$KIND,target=/t,size=1m",  # the type as expanded: ARG KIND=tmpfs
        "type=cache,target=/c,sharing=LOCKED,ro=True",
        "type=cache,target=/x,sharing=locked,id=c,uid=1,gid=2,mode=0700,ro",
        "type=tmpfs,target=/t,size=1m",
        "type=secret,id=s,required=true,mode=0400,dst=/run/s",
        "type=ssh,required,uid=0",
        "type=bind,source=a,destination=/x,readwrite",
    ],
)
def test_valid_mount_keys_still_convert(mount: str) -> None:
    text = f"FROM scratch\nARG KIND=tmpfs\nRUN --mount={mount} true\n"
    anyio.run(convert, parse(text), BuildOptions(), _no_images)


def test_a_scratch_stage_of_labels_builds_an_image_without_layers(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nLABEL a=b\nLABEL c=d\n")
    out = tmp_path / "out.tar"
    done = dockerfile_build(tmp_path / "root", context, "--output", f"type=oci,dest={out}")
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        blob = "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(blob))  # type: ignore[arg-type]
        blob = "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
        config = json.load(tar.extractfile(blob))  # type: ignore[arg-type]
    assert not manifest["layers"]
    assert config["config"]["Labels"] == {"a": "b", "c": "d"}
    assert not config["rootfs"]["diff_ids"]


@pytest.mark.root
def test_a_secret_mount_in_a_scratch_stage_is_no_traceback(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nRUN --mount=type=secret,id=s true\n")
    (tmp_path / "s").write_text("x")
    done = dockerfile_build(tmp_path / "root", context, "--secret", f"id=s,src={tmp_path / 's'}")
    assert "did not complete successfully" in error_line(done)  # no /bin/sh in scratch


def test_a_digit_that_is_not_ascii_is_a_name_not_a_stage_number() -> None:
    """Found by the fuzzer: ``FROM ²`` passed ``str.isdigit`` and failed ``int``."""
    assert converted_error("FROM scratch\nCOPY --from=² a /\n").startswith(
        'Dockerfile:2: failed to parse stage name "²"'
    )


def test_a_user_that_is_not_ascii_digits_is_a_name(tmp_path: Path) -> None:
    from llbkit.core.errors import UserError
    from llbkit.core.ops.users import resolve_user

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    for user in ("²", "root:²"):
        with pytest.raises(UserError, match="unable to find"):
            resolve_user(tmp_path, user)


def _chain(kind: str, count: int) -> str:
    if kind == "from":  # each stage FROM the one before
        lines = ["FROM scratch AS s0"] + [f"FROM s{n - 1} AS s{n}" for n in range(1, count)]
        return "\n".join(lines) + "\nLABEL last=yes\n"
    lines = ["FROM scratch AS s0", "COPY Dockerfile /"]  # each stage copies the one before
    for n in range(1, count):
        lines += [f"FROM scratch AS s{n}", f"COPY --from=s{n - 1} / /"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["from", "copy"])
def test_a_chain_of_fifteen_hundred_stages_builds(tmp_path: Path, kind: str) -> None:
    """Stages needing each other 1,500 deep: BuildKit builds them; the frontend's recursion
    through the chain (and its cycle check's) was a RecursionError past a few hundred."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(_chain(kind, 1500))
    out = tmp_path / "out"
    done = dockerfile_build(tmp_path / "root", ctx, "--output", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    if kind == "copy":
        assert (out / "Dockerfile").read_text() == (ctx / "Dockerfile").read_text()


def test_a_cycle_deep_in_a_chain_is_still_named() -> None:
    """As BuildKit names a cycle through three stages: the first stage of it."""
    lines = ["FROM scratch AS s0", "COPY --from=s1499 / /"]
    for n in range(1, 1500):
        lines += [f"FROM scratch AS s{n}", f"COPY --from=s{n - 1} / /"]
    dockerfile = "\n".join(lines) + "\n"

    async def run() -> None:
        await convert(parse(dockerfile), BuildOptions(), _no_images)

    with pytest.raises(DockerfileError, match=r"^circular dependency detected on stage: s0$"):
        anyio.run(run)
