"""Image reference parsing and normalization, checked against Docker's documented behaviour."""

from __future__ import annotations

import pytest

from llbkit.core.reference import ReferenceError, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "normalized", "familiar"),
    [
        ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
        ("alpine:3.18", "docker.io/library/alpine:3.18", "alpine:3.18"),
        ("library/alpine", "docker.io/library/alpine:latest", "alpine:latest"),
        ("moby/buildkit:v0.11.6", "docker.io/moby/buildkit:v0.11.6", "moby/buildkit:v0.11.6"),
        ("index.docker.io/moby/buildkit", "docker.io/moby/buildkit:latest", "moby/buildkit:latest"),
        ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        (
            "127.0.0.1:5000/busybox",
            "127.0.0.1:5000/busybox:latest",
            "127.0.0.1:5000/busybox:latest",
        ),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}", f"alpine@{DIGEST}"),
        (f"alpine:3@{DIGEST}", f"docker.io/library/alpine:3@{DIGEST}", f"alpine:3@{DIGEST}"),
        ("ghcr.io/a__b/c-d.e:1.0_x", "ghcr.io/a__b/c-d.e:1.0_x", "ghcr.io/a__b/c-d.e:1.0_x"),
    ],
)
def test_normalization(text, normalized, familiar):
    ref = parse_reference(text)
    assert str(ref) == normalized
    assert ref.familiar() == familiar


def test_no_default_tag_when_asked():
    assert str(parse_reference("alpine", default_tag=False)) == "docker.io/library/alpine"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "it is empty"),
        ("Alpine", "repository name must be lowercase"),
        ("alpine:", "not of the form"),
        ("alpine@sha256:abc", "not of the form"),
        ("-alpine", "not of the form"),
        ("a" * 256, "longer than 255"),
    ],
)
def test_invalid_references_name_the_problem(text, why):
    with pytest.raises(ReferenceError) as err:
        parse_reference(text)
    assert why in str(err.value)
    assert repr(text) in str(err.value)
