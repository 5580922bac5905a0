"""Which proxy a registry request goes through: Go's reading of ``HTTPS_PROXY``,
``HTTP_PROXY`` and ``NO_PROXY``."""

from __future__ import annotations

import pytest

from llbkit.core.registry.proxies import ProxyError, proxy_for


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "proxied"),
    [
        ("", "registry.test", 443, True),
        ("*", "registry.test", 443, False),
        ("registry.test", "registry.test", 443, False),
        ("test", "registry.test", 443, False),  # a domain and its subdomains
        (".registry.test", "registry.test", 443, True),  # subdomains only
        (".test", "registry.test", 443, False),
        ("other.test, registry.test:5000", "registry.test", 443, True),
        ("other.test, registry.test:5000", "registry.test", 5000, False),
        ("10.0.0.0/8", "10.1.2.3", 443, False),
        ("10.0.0.0/8", "11.1.2.3", 443, True),
        ("", "localhost", 443, False),
        ("", "127.0.0.5", 443, False),
        ("", "::1", 443, False),
    ],
)
def test_no_proxy_is_read_as_go_reads_it(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, host: str, port: int, proxied: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert (proxy_for("https", host, port) is not None) == proxied


def test_a_proxy_we_cannot_speak_to_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.test:1080")
    with pytest.raises(ProxyError, match=r"HTTPS_PROXY=socks5://proxy.test:1080: only http://"):
        proxy_for("https", "registry.test", 443)
