"""``--export-cache type=s3`` and ``--import-cache type=s3`` end to end: moto's S3 on loopback,
real builds on fresh state roots, several engines sharing one cache as CI runners do."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_cache_export_import import (  # the same Dockerfile, build and log readers
    command,
    context,  # noqa: F401 - a fixture, used by name
    digest_of,
    jsonschema_validate,
    ran,
    registry,  # noqa: F401 - a fixture, used by name
    steps,
)

pytest.importorskip("moto.server", reason="moto[server] is not installed (uv sync installs it)")
pytestmark = [pytest.mark.root, pytest.mark.services]

BUCKET = "llbkit-ci"
SECRET = "y-e2e-secret"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """moto's S3 on a free loopback port, with one bucket; its URL and a client."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    server.stop()


def _cache(url: str, *more: str) -> str:
    return ",".join(
        [
            "type=s3",
            f"bucket={BUCKET}",
            "region=us-east-1",
            f"endpoint_url={url}",
            "use_path_style=true",
            "access_key_id=x",
            f"secret_access_key={SECRET}",
            *more,
        ]
    )


def _engine_argv(host: str, root: Path, ctx: Path, image: str, *args: str) -> list[str]:
    """As ``build`` runs it (the same SOURCE_DATE_EPOCH), to start without waiting."""
    return [
        *command(host, root, ctx, "--opt", "build-arg:SOURCE_DATE_EPOCH=1700000000", *args),
        "--output",
        f"type=image,name={host}/{image},push=true",
    ]


@pytest.mark.parametrize("via", ["processes", "daemons"])
def test_several_engines_share_one_s3_cache(
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    s3: tuple[str, Any],
    via: str,
) -> None:
    """Three engines on three state roots — three processes, or three llbkitd daemons each
    with its own client — on one bucket."""
    url, client = s3
    with contextlib.ExitStack() as stack:
        argv = _engine_argv
        if via == "daemons":
            from tests.test_daemon import daemon

            addresses = {
                name: stack.enter_context(daemon(tmp_path / f"daemon-{name}"))[0]
                for name in ("A", "B", "C")
            }

            def argv(host: str, root: Path, ctx: Path, image: str, *args: str) -> list[str]:
                embedded = _engine_argv(host, root, ctx, image, *args)
                at = embedded.index("--root")
                return [*embedded[:at], "--addr", addresses[root.name], *embedded[at + 2 :]]

        _share(registry, context, tmp_path, url, client, argv)


def _share(host: str, ctx: Path, tmp_path: Path, url: str, client: Any, _argv: Any) -> None:
    first = subprocess.run(
        _argv(
            host,
            tmp_path / "A",
            ctx,
            "s3:a",
            "--export-cache",
            _cache(url, "mode=max"),
            "--metadata-file",
            str(tmp_path / "A.json"),
        ),
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    assert SECRET not in first.stderr
    # As buildkitd shows its s3 export: its own step name, a line per uploaded layer, no config
    assert re.search(r"^#\d+ exporting cache to s3$", first.stderr, re.MULTILINE), first.stderr
    assert " writing layer sha256:" in first.stderr
    assert " writing config " not in first.stderr
    config = _index(client)
    assert all("annotations" in layer for layer in config["layers"])

    # Two runners at once, each its own engine and state root: both import everything from
    # A's export, then both export to the same names, one of them new (C touching every blob
    # it finds).
    runners = {}
    for name, extra in (("B", ()), ("C", ("touch_refresh=0s",))):
        runners[name] = subprocess.Popen(
            _argv(
                host,
                tmp_path / name,
                ctx,
                f"s3:{name.lower()}",
                "--import-cache",
                _cache(url),
                "--export-cache",
                _cache(url, "mode=max", "name=buildkit;runners", *extra),
                "--metadata-file",
                str(tmp_path / f"{name}.json"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, proc in runners.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {stderr}"
        fates = steps(stderr)
        assert fates and set(fates.values()) == {"CACHED"}, f"{name}: {stderr}"
        assert not ran(stderr)
        assert digest_of(tmp_path / f"{name}.json") == digest_of(tmp_path / "A.json")
        assert SECRET not in stderr

    # Whoever wrote last, each index is whole and names only blobs the bucket holds.
    for name in ("buildkit", "runners"):
        config = _index(client, name)
        assert config["layers"]
        for layer in config["layers"]:
            head = client.head_object(Bucket=BUCKET, Key=f"blobs/{layer['blob']}")
            assert head["ContentLength"] == int(layer["annotations"]["size"]), layer
            assert "updated-at" in head["Metadata"], layer  # C touched it: older than 0s


def _index(client: Any, name: str = "buildkit") -> dict[str, Any]:
    body = client.get_object(Bucket=BUCKET, Key=f"manifests/{name}")["Body"].read()
    config: dict[str, Any] = json.loads(body)
    jsonschema_validate(config)
    return config
