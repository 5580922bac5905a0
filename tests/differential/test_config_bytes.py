"""An image config's and manifest's bytes are BuildKit v0.11.6's, so their digests are too:
recorded from buildctl (``--opt build-arg:SOURCE_DATE_EPOCH=0``,
``--output type=oci,buildinfo=false``)."""

from __future__ import annotations

from pathlib import Path

from llbkit.core.client.embedded import EmbeddedClient
from llbkit.sdk.testing.builds import build_in
from tests.differential.harness import read_oci

DOCKERFILE = 'FROM scratch\nENV A=é B="<x>&"\nLABEL m="<y>"\nCMD echo hi\nMAINTAINER Me <m@x>\n'
#: the config BuildKit wrote: keys sorted at the top, Go's escapes, UTF-8 kept, no layers null
BUILDKIT_CONFIG = (
    '{"architecture":"amd64","author":"Me \\u003cm@x\\u003e","config":{"Env":["PATH=/usr/local/'
    'sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=é","B=\\u003cx\\u003e\\u0026"],"Cmd"'
    ':["/bin/sh","-c","echo hi"],"WorkingDir":"/","Labels":{"m":"\\u003cy\\u003e"},"ArgsEscaped'
    '":true,"OnBuild":null},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T'
    '00:00:00Z","created_by":"ENV A=é B=\\u003cx\\u003e\\u0026","comment":"buildkit.dockerfile.v'
    '0","empty_layer":true},{"created":"1970-01-01T00:00:00Z","created_by":"LABEL m=\\u003cy\\u0'
    '03e","comment":"buildkit.dockerfile.v0","empty_layer":true},{"created":"1970-01-01T00:00:0'
    '0Z","created_by":"CMD [\\"/bin/sh\\" \\"-c\\" \\"echo hi\\"]","comment":"buildkit.dockerfil'
    'e.v0","empty_layer":true},{"created":"1970-01-01T00:00:00Z","created_by":"MAINTAINER Me \\'
    'u003cm@x\\u003e","comment":"buildkit.dockerfile.v0","empty_layer":true}],"os":"linux","roo'
    'tfs":{"type":"layers","diff_ids":null}}'
)
BUILDKIT_DIGEST = "sha256:096c0d4124f4734a614f8bcae1a0b66d14a67f7c2993ee50cd73d46e7deb832b"
#: and the manifest's (indented as Go's MarshalIndent, mediaType first, no layers as null)
BUILDKIT_MANIFEST = "sha256:23ab9f81bd7797bef8f1756597b5b632e78e3daa7a13814aee1f20010d389e2d"


def test_config_bytes_are_buildkits(tmp_path: Path) -> None:
    import hashlib
    import io
    import json
    import tarfile

    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    out = tmp_path / "out.tar"
    client = EmbeddedClient(locals={"context": tmp_path, "dockerfile": tmp_path})
    build_in(
        tmp_path / "root",
        client,
        frontend="dockerfile.v0",
        frontend_opts={"build-arg:SOURCE_DATE_EPOCH": "0"},
        exports=[("oci", {"dest": str(out)})],
    )
    data = out.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(
            tar.extractfile(  # type: ignore[union-attr]
                "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]
            ).read()
        )
        raw = tar.extractfile(  # type: ignore[union-attr]
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
        ).read()
    assert raw.decode() == BUILDKIT_CONFIG
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == BUILDKIT_DIGEST
    assert read_oci(data)[0]["config"]["OnBuild"] is None
    assert index["manifests"][0]["digest"] == BUILDKIT_MANIFEST
