"""The exporter conformance kit against ``oci``, ``docker`` and ``image`` (with a real push)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from llbkit.plugins.exporter_image.exporter import DockerExporter, ImageExporter, OCIExporter
from llbkit.sdk.testing import ExporterKit, MemoryClientIO


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _layer_files(members: Mapping[str, bytes], manifest: Mapping[str, Any]) -> set[str]:
    """The files of every layer of an image, as its layer blobs hold them."""
    found: set[str] = set()
    for layer in manifest["layers"]:
        blob = members["blobs/sha256/" + layer["digest"].split(":")[1]]
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            found |= {m.name for m in tar if m.isfile()}
    return found


class TestOCIExporter(ExporterKit):
    exporter_class = OCIExporter
    valid_attrs: ClassVar[dict[str, str]] = {"dest": "image.tar", "name": "example/kit:v1"}

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        members = _members(client.outputs["image.tar"])
        (top,) = json.loads(members["index.json"])["manifests"]
        assert top["digest"] == response["containerimage.digest"]
        manifest = json.loads(members["blobs/sha256/" + top["digest"].split(":")[1]])
        # Both layers of the result, each as its own blob.
        assert len(manifest["layers"]) == 2
        assert _layer_files(members, manifest) == {"dir/data.bin", "hello.txt"}


class TestDockerExporter(ExporterKit):
    exporter_class = DockerExporter
    valid_attrs: ClassVar[dict[str, str]] = {"dest": "image.tar", "name": "example/kit:v1"}

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        members = _members(client.outputs["image.tar"])
        (entry,) = json.loads(members["manifest.json"])
        assert entry["RepoTags"] == ["example/kit:v1"] and len(entry["Layers"]) == 2


@pytest.fixture(scope="class")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it as root)")
    from llbkit.sdk.testing.registry import LocalRegistry

    with LocalRegistry(tmp_path_factory.mktemp("kit-registry")) as registry:
        yield registry.host


@pytest.mark.services
class TestImageExporterPushing(ExporterKit):
    """``push=true`` through the engine's registry access, to a real registry."""

    exporter_class = ImageExporter
    host: ClassVar[str] = ""

    @pytest.fixture(autouse=True)
    def _registry(self, registry_host: str) -> None:
        type(self).host = registry_host
        type(self).valid_attrs = {"name": f"{registry_host}/kit/app:v1", "push": "true"}

    def check_export(self, client: MemoryClientIO, response: Mapping[str, str]) -> None:
        import httpx

        digest = response["containerimage.digest"]
        accept = (
            "application/vnd.oci.image.manifest.v1+json,"
            "application/vnd.docker.distribution.manifest.v2+json"
        )
        got = httpx.get(f"http://{self.host}/v2/kit/app/manifests/v1", headers={"Accept": accept})
        assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == digest
        for layer in got.json()["layers"]:
            blob = httpx.head(f"http://{self.host}/v2/kit/app/blobs/{layer['digest']}")
            assert blob.status_code == 200
