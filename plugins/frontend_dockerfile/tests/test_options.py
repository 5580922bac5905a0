"""The ``--opt`` readers on what the recorded differential cases do not reach: Go's CSV
quoting, its integer bounds, addresses Go prints its own way (each expected answer is what Go's
``encoding/csv``, ``strconv`` and ``net.ParseIP`` give)."""

from __future__ import annotations

import pytest

from llbkit.core.errors import ConfigError
from llbkit.plugins.frontend_dockerfile.options import (
    csv_fields,
    go_int64,
    parse_extra_hosts,
    parse_platforms,
    parse_ulimits,
)
from llbkit.sdk import llb


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("a,b", ["a", "b"]),
        ('"a,b",c', ["a,b", "c"]),
        ('"say ""hi""",x', ['say "hi"', "x"]),
        (" a , b", [" a ", " b"]),
        ("a,", ["a", ""]),
        ('""', [""]),
    ],
)
def test_csv_fields_as_go_reads_them(text: str, fields: list[str]) -> None:
    assert csv_fields(text) == fields


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('a"b', 'parse error on line 1, column 2: bare " in non-quoted-field'),
        ('"a"b', 'parse error on line 1, column 3: extraneous or missing " in quoted-field'),
        ('a,"b"c,d', 'parse error on line 1, column 5: extraneous or missing " in quoted-field'),
        ('"ab', 'parse error on line 1, column 4: extraneous or missing " in quoted-field'),
    ],
)
def test_csv_quotes_go_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error + "$"):
        csv_fields(text)


def test_int64_bounds_and_forms() -> None:
    assert go_int64("+5") == 5 and go_int64("-9223372036854775808") == -(1 << 63)
    for text, why in [("9223372036854775808", "value out of range"), (" 5", "invalid syntax")]:
        with pytest.raises(ValueError, match=why):
            go_int64(text)
    with pytest.raises(ValueError, match="invalid syntax"):
        go_int64("1_000")  # Python's int() takes it; Go's base-10 ParseInt does not


def test_hosts_print_addresses_as_go_does() -> None:
    found = parse_extra_hosts("m=::FFFF:1.2.3.4,v6=2001:DB8:0:0:0:0:0:1")
    assert found == [("m", "1.2.3.4"), ("v6", "2001:db8::1")]
    with pytest.raises(ConfigError, match="failed to parse IP fe80::1%eth0"):
        parse_extra_hosts("z=fe80::1%eth0")


def test_ulimit_words() -> None:
    assert parse_ulimits("nofile=1:-1") == [("nofile", 1, -1)]
    with pytest.raises(ConfigError, match="too many limit value arguments - 1:2:3"):
        parse_ulimits("nofile=1:2:3")


def test_platforms_normalized_as_containerd() -> None:
    assert parse_platforms("linux/aarch64,macos/x86_64,linux/armhf,linux/arm") == [
        llb.Platform("linux", "arm64", ""),
        llb.Platform("darwin", "amd64", ""),
        llb.Platform("linux", "arm", "v7"),
        llb.Platform("linux", "arm", "v7"),
    ]
    with pytest.raises(ConfigError, match='"a b" is an invalid component of "a b/x"'):
        parse_platforms("a b/x")


def test_a_remote_context_is_taken_by_what_it_names() -> None:
    """``--opt context=``: a Git repository (by BuildKit's rules for one) or an HTTP URL is
    the context; anything else leaves the client's directory the context, as in BuildKit."""
    import anyio

    from llbkit.plugins.frontend_dockerfile.frontend import DockerfileFrontend
    from llbkit.plugins.frontend_dockerfile.remote import parse_git_ref
    from llbkit.sdk.testing import make_context

    frontend = DockerfileFrontend(make_context("dockerfile.v0"))
    for url in (
        "https://github.com/moby/buildkit.git#v0.11.6:frontend",
        "git@github.com:moby/buildkit.git",
        "github.com/moby/buildkit",
        "https://example.com/context.tar.gz",
    ):
        job = anyio.run(frontend.resolve, {"context": url, "contextsubdir": "d"})
        assert job.remote == url and job.subdir == "d"
    job = anyio.run(frontend.resolve, {"vcs:source": "x", "requestid": "r", "context": "dir"})
    assert job.options.filename == "Dockerfile" and not job.remote
    found = parse_git_ref("https://h.example/r.git#v1:sub/dir")
    assert found is not None and (found.remote, found.commit, found.subdir) == (
        "https://h.example/r.git",
        "v1",
        "sub/dir",
    )
    assert parse_git_ref("https://h.example/r.git/") is None
    assert parse_git_ref("https://h.example/archive.tar.gz") is None
