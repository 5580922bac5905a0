"""``--export-cache type=azblob`` and ``--import-cache type=azblob`` end to end: Azurite on
loopback, real builds on fresh state roots, the Dockerfile of the other cache tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llbkit.sdk.testing.azurite import Azurite, azurite  # noqa: F401 - a fixture, used by name
from tests.test_cache_export_import import (  # the same Dockerfile, build and log readers
    build,
    context,  # noqa: F401 - a fixture, used by name
    digest_of,
    jsonschema_validate,
    ran,
    registry,  # noqa: F401 - a fixture, used by name
    steps,
)

pytest.importorskip("azure.storage.blob", reason="azure-storage-blob is not installed")
pytestmark = [pytest.mark.root, pytest.mark.services]

CONTAINER = "llbkit-ci"
PREFIX = "team/app"


def _cache(server: Azurite, *more: str) -> str:
    return ",".join(
        [
            "type=azblob",
            f"account_url={server.url}",
            f"secret_access_key={server.key}",
            f"container={CONTAINER}",  # not there yet: the export creates it
            f"prefix={PREFIX}",
            *more,
        ]
    )


def test_azblob_cache_round_trip(
    registry: str,  # noqa: F811 - the fixture imported above
    context: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    azurite: Azurite,  # noqa: F811 - the fixture imported above
) -> None:
    from azure.storage.blob import BlobServiceClient

    first = build(
        registry,
        tmp_path / "A",
        context,
        "--export-cache",
        _cache(azurite, "mode=max"),
        "--metadata-file",
        str(tmp_path / "A.json"),
        image="azblob:a",
    )
    assert first.returncode == 0, first.stderr
    assert azurite.key not in first.stderr

    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        holder = service.get_container_client(CONTAINER)
        stored = {blob.name: blob.size for blob in holder.list_blobs()}
        config: dict[str, Any] = json.loads(
            holder.get_blob_client(f"{PREFIX}/manifests/buildkit").download_blob().readall()
        )
    jsonschema_validate(config)
    assert config["layers"]
    for layer in config["layers"]:  # BuildKit's layout: each layer described, stored whole
        assert stored[f"{PREFIX}/blobs/{layer['blob']}"] == int(layer["annotations"]["size"])

    second = build(
        registry,
        tmp_path / "B",
        context,
        "--import-cache",
        _cache(azurite),
        "--metadata-file",
        str(tmp_path / "B.json"),
        image="azblob:b",
    )
    assert second.returncode == 0, second.stderr
    fates = steps(second.stderr)
    assert fates and set(fates.values()) == {"CACHED"}, second.stderr
    assert not ran(second.stderr)
    assert digest_of(tmp_path / "B.json") == digest_of(tmp_path / "A.json")
    assert azurite.key not in second.stderr
