"""Core's built-in sources: each runs the source conformance kit, then its own parsing cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from llbkit.core.errors import ConfigError, UserError
from llbkit.core.plugins import Platform
from llbkit.core.sources.git import GitSource, parse_git
from llbkit.core.sources.http import HTTPSource, parse_http
from llbkit.core.sources.image import ImageSource, parse_image
from llbkit.core.sources.local import LocalSource, parse_local
from llbkit.core.sources.oci_layout import OCILayoutSource, parse_oci_layout
from llbkit.sdk.testing import SourceKit

DIGEST = "sha256:" + "ab" * 32


class TestImageSource(SourceKit):
    source_class = ImageSource
    scheme = "docker-image"
    attr_namespace = "image"
    valid = (
        ("docker-image://docker.io/library/alpine:3.18", {"image.resolvemode": "pull"}),
        (f"docker-image://127.0.0.1:5000/busybox@{DIGEST}", {}),
    )
    invalid = ("docker-image://Alpine", "docker-image://", "git://x", "alpine")


class TestOCILayoutSource(SourceKit):
    source_class = OCILayoutSource
    scheme = "oci-layout"
    attr_namespace = "oci"
    valid = ((f"oci-layout://mystore@{DIGEST}", {"oci.session": "s1"}),)
    invalid = ("oci-layout://mystore", "oci-layout://@" + DIGEST, "oci-layout://x@sha256:12")


class TestLocalSource(SourceKit):
    source_class = LocalSource
    scheme = "local"
    attr_namespace = "local"
    valid = (("local://context", {"local.includepattern": '["src/**"]', "local.unique": "x"}),)
    invalid = ("local://", "local:context")


class TestGitSource(SourceKit):
    source_class = GitSource
    scheme = "git"
    attr_namespace = "git"
    valid = (("git://github.com/moby/buildkit#v0.11.6:docs", {"git.keepgitdir": "true"}),)
    invalid = ("git://", "git://#main")


class TestHTTPSource(SourceKit):
    source_class = HTTPSource
    scheme = "https"
    attr_namespace = "http"
    valid = (("https://example.com/a.tar.gz", {"http.checksum": DIGEST, "http.perm": "0755"}),)
    invalid = ("https://", "https:///path", "ftp://example.com/x")


def test_image_reference_is_normalized_and_attrs_parsed():
    job = parse_image(
        "docker-image://busybox", {"image.layerlimit": "2"}, Platform("linux", "arm64", "v8")
    )
    assert str(job.reference) == "docker.io/library/busybox:latest"
    assert job.layer_limit == 2 and job.resolve_mode == "default"
    assert job.platform == Platform("linux", "arm64", "v8")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            {"image.resolvemode": "sometimes"},
            "image.resolvemode='sometimes' is not one of default, local, pull",
        ),
        ({"image.layerlimit": "0"}, "image.layerlimit='0' must be at least 1"),
        ({"image.layerlimit": "many"}, "image.layerlimit='many' is not a number"),
        ({"image.resolvmode": "pull"}, "unknown option 'image.resolvmode'"),
    ],
)
def test_image_attribute_errors_name_the_attribute(attrs, message):
    with pytest.raises(ConfigError) as err:
        parse_image("docker-image://alpine", attrs, None)
    assert message in str(err.value)
    assert str(err.value).startswith("source docker-image://alpine: ")


def test_attributes_of_other_namespaces_are_ignored_as_buildkit_does():
    assert parse_image("docker-image://alpine", {"local.unique": "x", "future.thing": "1"}, None)


def test_git_identifier_parts():
    job = parse_git("git://github.com/moby/buildkit#v0.11.6:docs/dev", {}, None)
    assert (job.remote, job.ref, job.subdir, job.url) == (
        "github.com/moby/buildkit",
        "v0.11.6",
        "docs/dev",
        "https://github.com/moby/buildkit",
    )
    job = parse_git(
        "git://github.com/x/y",
        {"git.fullurl": "git@github.com:x/y.git", "git.keepgitdir": "true"},
        None,
    )
    assert job.url == "git@github.com:x/y.git" and job.keep_git_dir and job.ref == ""


def test_local_patterns_are_json_arrays():
    job = parse_local(
        "local://ctx", {"local.excludepatterns": '["*.o", "!keep.o"]', "local.differ": "none"}, None
    )
    assert job.exclude_patterns == ("*.o", "!keep.o") and job.differ == "none"
    with pytest.raises(ConfigError) as err:
        parse_local("local://ctx", {"local.followpaths": "src"}, None)
    assert "local.followpaths is not a JSON array" in str(err.value)
    with pytest.raises(ConfigError):
        parse_local("local://ctx", {"local.includepattern": "[1, 2]"}, None)


def test_http_attrs():
    job = parse_http(
        "http://127.0.0.1:8080/f",
        {"http.perm": "0755", "http.uid": "1000", "http.filename": "f.bin"},
        None,
    )
    assert (job.perm, job.uid, job.gid, job.filename) == (0o755, 1000, 0, "f.bin")
    with pytest.raises(ConfigError) as err:
        parse_http("http://h/f", {"http.checksum": "md5:abc"}, None)
    assert "http.checksum='md5:abc' is not a digest" in str(err.value)
    with pytest.raises(ConfigError):
        parse_http("http://h/f", {"http.filename": "../etc/passwd"}, None)
    assert parse_http("http://h/f", {"http.header.Accept": "x"}, None)


def test_oci_layout_keeps_store_and_digest():
    job = parse_oci_layout(f"oci-layout://store1@{DIGEST}", {"oci.layerlimit": "3"}, None)
    assert (job.store, job.digest, job.layer_limit) == ("store1", DIGEST, 3)


def test_an_oci_layout_the_client_lacks_is_one_line():
    import asyncio
    from pathlib import Path

    from llbkit.core.sources.oci_layout import parse_oci_layout
    from llbkit.sdk.testing import MemoryClientIO, RecordingProgress

    ident = "oci-layout://content-store/busybox@sha256:" + "a" * 64
    job = parse_oci_layout(ident, {}, None)
    with pytest.raises(UserError) as err:
        asyncio.run(job.fetch(MemoryClientIO(Path(".")), Path("."), RecordingProgress()))
    assert str(err.value) == "no OCI layout 'content-store/busybox' in this test client"


def test_a_mirror_synced_again_after_keying_is_never_built_from(tmp_path: Path) -> None:
    """Two builds of one directory name at once (a daemon's clients with one shared key, or
    none as buildctl): the one keyed first must not take the other's files under its own
    key, nor fail; the second syncs a spare mirror, as BuildKit takes another mutable ref.
    Once the first is done, the next build syncs the first mirror again."""
    from dataclasses import replace

    import anyio

    from llbkit.core.client.embedded import EmbeddedClient

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, text in ((first, "one"), (second, "two, longer")):
        folder.mkdir()
        (folder / "f.txt").write_text(text)
    state = tmp_path / "state"

    class SameIdentity(EmbeddedClient):
        def local_identity(self, name: str) -> str:
            return "shared"

    job = replace(parse_local("local://ctx", {}, None), state_dir=state)
    other = replace(parse_local("local://ctx", {}, None), state_dir=state)
    a, b = SameIdentity(locals={"ctx": first}), SameIdentity(locals={"ctx": second})

    async def race() -> None:
        await job.cache_key(a)
        await other.cache_key(b)  # the first's mirror is held: a spare one
        await job.fetch(a, tmp_path / "out-a", None)  # type: ignore[arg-type]
        await other.fetch(b, tmp_path / "out-b", None)  # type: ignore[arg-type]

    (tmp_path / "out-a").mkdir()
    (tmp_path / "out-b").mkdir()
    anyio.run(race)
    assert (tmp_path / "out-a" / "f.txt").read_text() == "one"
    assert (tmp_path / "out-b" / "f.txt").read_text() == "two, longer"
    assert len(list(state.iterdir())) == 2
    job.discard()
    other.discard()
    later = replace(parse_local("local://ctx", {}, None), state_dir=state)
    anyio.run(later.cache_key, b)
    assert len(list(state.iterdir())) == 2  # no third: the first mirror, free again
    later.discard()


def test_an_http_sources_key_is_buildkits() -> None:
    """The record BuildKit v0.11.6 exported for ``llb.HTTP`` of a folder's URL (no mode
    asked, ``sub\\n`` served, ``Last-Modified`` as below) is named by llbkit's key for it."""
    import hashlib

    from llbkit.core.solver import buildkit_keys as bk

    job = parse_http("http://127.0.0.1:18777/dir/", {}, None)
    checksum = "sha256:" + hashlib.sha256(b"sub\n").hexdigest()
    key = job._key(job._url_name(), checksum, "Thu, 03 Dec 2026 15:56:00 GMT")
    assert bk.output_key(bk.source_digest(key), 0) == (
        "sha256:7679655cbfde19978504dcf2695676b8fb518d6dd046a3cd953835ccf736d17c"
    )
