"""A mistaken or hostile ``buildkitd.toml`` is refused in one line naming the file and key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from llbkit.core.config import load_config
from llbkit.core.errors import ConfigError
from tests.hostile.cli import error_line, llbkit


def refusal(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "buildkitd.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def test_random_bytes_are_one_line_from_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_bytes(b"\x80" + os.urandom(300))
    done = llbkit(tmp_path / "root", "du", config=path)
    assert error_line(done) == f"error: {path}: not TOML: byte 0 is not UTF-8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[registry."docker.io"]\nmirrors = "mirror.example"\n',
            'registry."docker.io": mirrors must be a list of strings, e.g. mirrors = ["…"]',
        ),
        ('[registry."r"]\nhttp = "yes"\n', 'registry."r": http must be true or false'),
        ('[registry."r"]\nca = "/ca.pem"\n', 'registry."r": ca must be a list of strings'),
        ('[registry."r"]\nmirror = ["m"]\n', 'registry."r": unknown key mirror'),
        (
            '[registry."r"]\nkeypair = "k"\n',
            'registry."r": keypair must be tables like [[registry."host".keypair]]',
        ),
        ("[worker.oci]\nmax-parallelism = -1\n", "worker.oci.max-parallelism must be a whole"),
        ('[worker.oci]\nmax-parallelism = "8"\n', "worker.oci.max-parallelism must be a whole"),
        ("[worker.oci]\nmax-parallelism = 2.5\n", "worker.oci.max-parallelism must be a whole"),
        ("[worker.oci]\nmax-parallelism = true\n", "worker.oci.max-parallelism must be a whole"),
        (
            '[worker.oci]\nplatforms = ["bogus/arch"]\n',
            "worker.oci.platforms: 'bogus/arch': unknown operating system 'bogus'",
        ),
        (
            '[worker.oci]\nplatforms = ["linux/amd46"]\n',
            "worker.oci.platforms: 'linux/amd46': unknown architecture 'amd46'",
        ),
        ('[worker.oci]\nplatforms = "linux/amd64"\n', "worker.oci.platforms must be a list"),
        ("[worker.oci]\ngcpolicy = 5\n", "worker.oci.gcpolicy must be tables"),
        ("dns = 1\n", "dns must be a table"),
        ('[dns]\nnameservers = "1.1.1.1"\n', "dns.nameservers must be a list of strings"),
        ("[dns]\noptions = [1]\n", "dns.options must be a list of strings"),
        ('[dns]\nsearch = ["a.test"]\n', "unknown key dns.search"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    assert refusal(tmp_path, text).startswith(message)


def test_what_buildkit_reads_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text(
        '[registry."docker.io"]\nmirrors = ["m.example"]\nhttp = true\ninsecure = false\n'
        'ca = ["/ca.pem"]\ntlsconfigdir = ["/d"]\n'
        '[[registry."docker.io".keypair]]\nkey = "/k.pem"\ncert = "/c.pem"\n'
        # BuildKit reads 0 as "no limit" (its default), so it is not a mistake.
        '[worker.oci]\nmax-parallelism = 0\nplatforms = ["linux/amd64", "linux/arm/v7"]\n'
    )
    config = load_config(path)
    assert config.registry["docker.io"]["mirrors"] == ["m.example"]
    assert config.max_parallelism == 0


def test_dns_is_read_and_given_to_every_driver(tmp_path: Path) -> None:
    path = tmp_path / "buildkitd.toml"
    path.write_text('[dns]\nnameservers = ["1.1.1.1"]\nsearchDomains = ["a.test"]\n')
    config = load_config(path)
    assert config.dns == {"nameservers": ["1.1.1.1"], "searchDomains": ["a.test"]}
    assert not [key for key in config.unused if key.startswith("dns")]
    # ... and handed to every driver the engine makes, as PluginContext.dns
    from llbkit.core.drivers import Drivers
    from llbkit.core.plugins.context import DNSConfig
    from llbkit.core.plugins.registry import PluginRegistry

    seen = []

    class Recording:
        api_version = 2

        def __init__(self, ctx: Any) -> None:
            seen.append(ctx.dns)

    registry = PluginRegistry.for_testing({"llbkit.exporters": {"rec": Recording}})
    Drivers(registry, config, tmp_path / "root").exporter("rec")
    assert seen == [DNSConfig(("1.1.1.1",), (), ("a.test",))]


def test_values_nested_thousands_deep_are_one_line(tmp_path: Path) -> None:
    """tomllib reads nested arrays by recursion: 3,000 deep was a RecursionError."""
    path = tmp_path / "buildkitd.toml"
    path.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"buildkitd.toml: .*nested too deeply"):
        load_config(path)
