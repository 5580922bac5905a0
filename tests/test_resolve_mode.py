"""``--opt image-resolve-mode`` (what ``docker buildx build --pull`` sends), on a tag that
moves between builds: ``local`` builds on the image resolved before, ``default`` and
``pull`` on the one the registry has now, as BuildKit's do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.hostile.cli import dockerfile_build

pytestmark = [pytest.mark.root, pytest.mark.services]


def test_a_moved_tag_is_followed_unless_local_is_asked(tmp_path: Path) -> None:
    for tool in ("docker-registry", "runc", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, layer_tar, push_image

    ctx = tmp_path / "ctx"
    ctx.mkdir()

    with LocalRegistry(tmp_path / "registry") as registry:

        def move(which: str) -> None:
            layers = [busybox_layer(), layer_tar({"which": f"{which}\n"})]
            push_image(registry.host, "library/moving:latest", layers)

        def built(mode: str) -> str:
            out = tmp_path / f"out-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            done = dockerfile_build(
                tmp_path / "root",
                ctx,
                *(["--opt", f"image-resolve-mode={mode}"] if mode else []),
                *["--output", f"type=local,dest={out}"],
            )
            assert done.returncode == 0, done.stderr
            assert "has no effect" not in done.stderr
            return (out / "seen").read_text().strip()

        (ctx / "Dockerfile").write_text(
            f"FROM {registry.host}/library/moving\nRUN cat /which > /seen\n"
        )
        move("one")
        assert built("") == "one"
        move("two")
        assert built("local") == "one"
        assert built("") == "two"
        move("three")
        assert built("pull") == "three"
        assert built("local") == "three"
