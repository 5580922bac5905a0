"""``[registry."host"]`` TLS settings as buildkitd reads them: ``ca``, ``keypair``,
``tlsconfigdir``, ``insecure`` and ``http``, against a real docker-registry serving HTTPS with a
certificate from a private CA (and, for ``keypair``, requiring client certificates)."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from llbkit.core.plugins.context import Platform
from llbkit.core.reference import parse_reference
from llbkit.core.registry.client import RegistryClient, RegistryConfig, RegistryError
from llbkit.sdk.testing.registry import LocalRegistry, layer_tar, push_image
from tests.hostile.serving import serving

pytestmark = pytest.mark.services

trustme = pytest.importorskip("trustme")


@dataclass
class Served:
    plain: str  # the registry over HTTP, where the image was pushed
    https: str  # the same images over HTTPS, server certificate from ``ca``
    mutual: str  # the same, also requiring a client certificate from ``client_ca``
    ca: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    work = tmp_path_factory.mktemp("tls")
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("client.test")
    files = {
        "ca.pem": ca.cert_pem.bytes(),
        "client-ca.pem": client_ca.cert_pem.bytes(),
        "server.pem": b"".join(b.bytes() for b in server.cert_chain_pems),
        "server.key": server.private_key_pem.bytes(),
        "client.pem": b"".join(b.bytes() for b in client.cert_chain_pems),
        "client.key": client.private_key_pem.bytes(),
    }
    for name, data in files.items():
        (work / name).write_bytes(data)
    pair = (work / "server.pem", work / "server.key")
    data = work / "images"
    with LocalRegistry(work / "plain", data=data) as plain:
        push_image(plain.host, "img:latest", [layer_tar({"hello": b"hi\n"})])
        with (
            LocalRegistry(work / "https", data=data, tls=pair) as https,
            LocalRegistry(
                work / "mutual", data=data, tls=pair, client_cas=[work / "client-ca.pem"]
            ) as mutual,
        ):
            yield Served(
                plain.host,
                https.host,
                mutual.host,
                work / "ca.pem",
                work / "client.pem",
                work / "client.key",
            )


def resolve(host: str, settings: Mapping[str, Any] | None) -> str:
    """The manifest digest of ``host/img`` with ``settings`` as ``[registry."host"]``."""
    config = RegistryConfig({host: settings} if settings is not None else {})

    async def run() -> str:
        async with RegistryClient(config, timeout=10.0) as client:
            found = await client.resolve(parse_reference(f"{host}/img"), Platform("linux", "amd64"))
            return found.manifest_digest

    return anyio.run(run)


def refused(host: str, settings: Mapping[str, Any] | None) -> str:
    with pytest.raises(RegistryError) as err:
        resolve(host, settings)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_loopback_registry_is_plain_http_unless_http_is_false(served: Served) -> None:
    digest = resolve(served.plain, None)
    assert resolve(served.plain, {"http": True}) == digest
    # http = false: HTTPS, which the plain registry does not speak
    assert "cannot reach the registry" in refused(served.plain, {"http": False})
    # the HTTPS registry over plain HTTP answers 400, and its certificate is not trusted
    assert "HTTP 400" in refused(served.https, None)
    assert "CERTIFICATE_VERIFY_FAILED" in refused(served.https, {"http": False})


def test_the_machines_cas_are_trusted(served: Served) -> None:
    """Without ``ca``, a certificate is checked against the machine's CAs (the system's
    bundle, here replaced by the private CA in a mount namespace), as buildkitd's Go clients
    check it: not against certifi's bundle alone."""
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if os.geteuid() != 0 or shutil.which("unshare") is None or not system.is_file():
        pytest.skip("needs root, unshare and the system's CA bundle")
    code = (
        "from tests.hostile.test_registry_tls import resolve; "
        f"print(resolve({served.https!r}, {{'http': False}}))"
    )
    script = f'mount --bind "$1" {system} && exec "$2" -c "$3"'
    command = ["unshare", "-m", "sh", "-c", script, "-", str(served.ca), sys.executable, code]
    root = Path(__file__).resolve().parents[2]
    # OpenSSL's own defaults, not a bundle named in the environment
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == resolve(served.plain, None)


def test_ca_adds_a_registrys_private_ca(served: Served) -> None:
    digest = resolve(served.plain, None)
    assert resolve(served.https, {"http": False, "ca": [str(served.ca)]}) == digest


def test_tlsconfigdir_reads_cas_and_a_client_certificate(served: Served, tmp_path: Path) -> None:
    """As docker's ``certs.d``: ``*.crt`` are CAs, ``NAME.cert`` with ``NAME.key`` a client's."""
    digest = resolve(served.plain, None)
    certs = tmp_path / "certs.d"
    certs.mkdir()
    shutil.copy(served.ca, certs / "ca.crt")
    settings = {"http": False, "tlsconfigdir": [str(certs), str(tmp_path / "missing")]}
    assert resolve(served.https, settings) == digest
    assert "cannot reach the registry" in refused(served.mutual, settings)
    shutil.copy(served.client_cert, certs / "client.cert")
    shutil.copy(served.client_key, certs / "client.key")
    assert resolve(served.mutual, settings) == digest


def test_keypair_is_the_client_certificate(served: Served) -> None:
    digest = resolve(served.plain, None)
    trusted = {"http": False, "ca": [str(served.ca)]}
    assert "cannot reach the registry" in refused(served.mutual, trusted)
    pair = {"cert": str(served.client_cert), "key": str(served.client_key)}
    assert resolve(served.mutual, {**trusted, "keypair": [pair]}) == digest


def test_insecure_is_https_without_verification_after_plain_http(served: Served) -> None:
    """BuildKit's order: plain HTTP first (loopback, or ``http = true``), then HTTPS that
    trusts any certificate; never plain HTTP for ``insecure`` alone on another host."""
    digest = resolve(served.plain, None)
    assert resolve(served.https, {"insecure": True}) == digest  # HTTP's 400, then HTTPS
    assert resolve(served.https, {"insecure": True, "http": False}) == digest
    assert resolve(served.plain, {"insecure": True}) == digest  # plain HTTP first
    endpoints = RegistryConfig({"reg.test": {"insecure": True}}).endpoints("reg.test")
    assert [e.scheme for e in endpoints] == ["https"]
    both = RegistryConfig({"reg.test": {"insecure": True, "http": True}}).endpoints("reg.test")
    assert [e.scheme for e in both] == ["http", "https"]


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("ca", "ca {missing}: No such file or directory"),
        ("keypair", "keypair {missing}: No such file or directory"),
        ("bad-ca", "ca {bad}: not a PEM certificate"),
    ],
)
def test_a_tls_file_that_cannot_be_used_is_named(
    served: Served, tmp_path: Path, key: str, said: str
) -> None:
    missing, bad = tmp_path / "missing.pem", tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    settings: dict[str, Any] = {"http": False}
    if key == "ca":
        settings["ca"] = [str(missing)]
    elif key == "bad-ca":
        settings["ca"] = [str(bad)]
    else:
        settings["keypair"] = [{"cert": str(missing), "key": str(missing)}]
    message = refused(served.https, settings)
    assert message.startswith(f'registry."{served.https}": ')
    assert said.format(missing=missing, bad=bad) in message


def test_a_build_reads_the_tls_settings_of_its_config(served: Served, tmp_path: Path) -> None:
    """The whole path: ``--config`` with ``ca`` makes a Dockerfile build pull over HTTPS."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    config = tmp_path / "llbkit.toml"
    config.write_text(f'[registry."{served.https}"]\nhttp = false\nca = ["{served.ca}"]\n')
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {served.https}/img\nCOPY Dockerfile /\n")
    command = [sys.executable, "-m", "llbkit.core"]
    args = ["build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}"]
    args += ["--local", f"dockerfile={ctx}", "--progress", "plain"]
    root = ["--root", str(tmp_path / "root")]
    done = subprocess.run([*command, *root, "--config", str(config), *args], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert f"load metadata for {served.https}/img".encode() in done.stderr
    other = ["--root", str(tmp_path / "other")]  # where nothing was resolved before
    (tmp_path / "no-ca.toml").write_text(f'[registry."{served.https}"]\nhttp = false\n')
    no_ca = ["--config", str(tmp_path / "no-ca.toml")]
    without = subprocess.run([*command, *other, *no_ca, *args], capture_output=True)
    assert without.returncode == 1
    assert b"CERTIFICATE_VERIFY_FAILED" in without.stderr.splitlines()[-1]


def redirecting_to(target: str) -> Any:
    """A plain-HTTP host that answers every request with a redirect to the same path on
    ``https://target`` (as a registry sends blobs to HTTPS storage)."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def _go(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"https://{target}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _go

        def log_message(self, *args: object) -> None:
            pass

    return serving(Redirect)


def test_a_plain_http_registrys_redirect_to_https_is_verified(served: Served) -> None:
    """As buildkitd's resolver: the HTTPS a plain-HTTP registry redirects to is checked
    against the machine's CAs (the endpoint's default client: not the registry's ``ca``,
    and ``insecure`` makes another, HTTPS, endpoint)."""
    with redirecting_to(served.https) as host:
        assert "CERTIFICATE_VERIFY_FAILED" in refused(host, {"http": True})
        assert "CERTIFICATE_VERIFY_FAILED" in refused(host, {"http": True, "ca": [str(served.ca)]})


def test_plain_http_never_reads_the_machines_cas(served: Served) -> None:
    """The machine's CA bundle (a fifth of a warm build's start) is read at the first TLS
    handshake, never for a registry spoken to in plain HTTP."""
    code = (
        "from tests.hostile.test_registry_tls import resolve\n"
        "from llbkit.core.registry import tls\n"
        f"resolve({served.plain!r}, None)\n"
        "print(int(id(tls.system_context()) in tls._loaded))\n"
        "try:\n"
        f"    resolve({served.https!r}, {{'http': False}})\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, 'CERTIFICATE_VERIFY_FAILED' in str(err))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["0", "RegistryError True"], done.stdout
