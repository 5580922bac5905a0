"""A client for the OCI distribution API: resolve a reference for a platform, fetch blobs.

Auth as docker does it: anonymous first, then the challenge's scheme (a bearer token from the
realm, or basic) with credentials from ``$DOCKER_CONFIG/config.json``. A registry is reached
as buildkitd reaches it (:meth:`RegistryConfig.endpoints`): plain HTTP for loopback registries
(docker allows them by default) and hosts marked ``http``, HTTPS without verification for
``insecure``, HTTPS with the ``ca``, ``keypair`` and ``tlsconfigdir`` of ``[registry."host"]``
otherwise; ``mirrors`` are tried first.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from llbkit.core.errors import UserError
from llbkit.core.llb.digest import digest_of
from llbkit.core.plugins.context import Platform
from llbkit.core.reference import DEFAULT_DOMAIN, Reference
from llbkit.core.registry.connections import build_client, shared_connections
from llbkit.core.registry.credentials import DOCKER_HUB_HOST, credentials, identity, per_client
from llbkit.core.registry.proxies import is_loopback

if TYPE_CHECKING:
    from llbkit.core.registry.http import Client, Headers, Response

__all__ = [
    "Descriptor",
    "ContentMemo",
    "DirectoryMemo",
    "ManifestUnknownError",
    "RegistryClient",
    "RegistryConfig",
    "MAX_MANIFEST",
    "READ_TIMEOUT",
    "RegistryError",
    "ResolvedImage",
    "shared_connections",
]

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)


class RegistryError(UserError):
    """A registry refused or could not serve what a build needs."""


class RegistryAccessDenied(RegistryError):
    """The registry (or its token server) refused these credentials, or wants some: never
    answered from what another build resolved."""


class ManifestUnknownError(RegistryError):
    """The registry has no such manifest or blob (HTTP 404)."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def parse(cls, data: object, where: str) -> Descriptor:
        """A descriptor from a registry's manifest, checked: its digest names a blob in a URL
        and in the store, so it is ``algorithm:hex`` and nothing else."""
        shown = repr(data)[:200]
        if not isinstance(data, Mapping):
            raise RegistryError(f"{where}: malformed descriptor {shown}")
        try:
            found = cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]))
        except (KeyError, TypeError, ValueError):
            raise RegistryError(f"{where}: malformed descriptor {shown}") from None
        if not _BLOB_DIGEST.fullmatch(found.digest) or found.size < 0:
            raise RegistryError(f"{where}: malformed descriptor {shown}")
        return found


@dataclass(frozen=True)
class ResolvedImage:
    """An image for one platform: its manifest's digest, its config and its layers."""

    reference: Reference
    manifest_digest: str
    config: Mapping[str, Any]
    config_bytes: bytes
    layers: Sequence[Descriptor]
    #: the index the manifest was chosen from, when the reference names one
    index_digest: str = ""

    @property
    def digest(self) -> str:
        """What the reference resolved to (an index, or the manifest), as BuildKit's
        resolver answers a frontend: a ``FROM`` is pinned to it."""
        return self.index_digest or self.manifest_digest


class Endpoint(NamedTuple):
    """One way to a registry: ``scheme://host``, set up by ``[registry."name"]``."""

    scheme: str
    host: str
    name: str


@dataclass
class RegistryConfig:
    """``[registry."host"]`` settings: ``mirrors``, ``http``, ``insecure``, and the TLS ones
    (``ca``, ``keypair``, ``tlsconfigdir``)."""

    hosts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def endpoints(self, name: str) -> list[Endpoint]:
        """Where the registry (or mirror) ``name`` is reached, in the order BuildKit tries:
        plain HTTP with ``http = true`` (or, unless ``http = false``, on loopback), then HTTPS
        without verification with ``insecure = true``; HTTPS alone when neither is set. A
        registry without settings is HTTPS, or plain HTTP on loopback (as docker allows)."""
        host = _host_of(name)
        settings = self.hosts.get(name)
        if settings is None:
            return [Endpoint("http" if _loopback(name) else "https", host, name)]
        found = []
        if settings.get("http", _loopback(name)) is True:
            found.append(Endpoint("http", host, name))
        if settings.get("insecure") is True:
            found.append(Endpoint("https", host, name))
        return found or [Endpoint("https", host, name)]

    def mirrors(self, host: str) -> list[str]:
        return [str(m) for m in self.hosts.get(host, {}).get("mirrors", [])]


def _loopback(host: str) -> bool:
    """containerd's ``MatchLocalhost``: ``localhost`` or a loopback address, any port."""
    if host.startswith("["):  # [::1] or [::1]:5000
        return is_loopback(host[1:].partition("]")[0])
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return is_loopback(host.partition(":")[0])
    return is_loopback(host)


def _host_of(name: str) -> str:
    """The host a registry name is reached at (Docker Hub's is not ``docker.io``)."""
    return DOCKER_HUB_HOST if name == DEFAULT_DOMAIN else name


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def platform_matches(entry: Mapping[str, Any], want: Platform) -> bool:
    platform = entry.get("platform") or {}
    if platform.get("os") != want.os or platform.get("architecture") != want.architecture:
        return False
    variant = platform.get("variant", "")
    if want.architecture == "arm64" and not want.variant:
        return variant in ("", "v8")
    return not want.variant or variant == want.variant


_BLOB_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
#: containerd's bound on a manifest from a registry (its MaxManifestSize, "4 * 1048 * 1048"
#: as written there), applied here to configs too, which containerd reads in full
MAX_MANIFEST = 4 * 1048 * 1048
#: how many (repository, credentials, digest) answers a client set remembers before it
#: starts again: a bound for a long-running daemon, which costs only a request
_PROVEN_LIMIT = 10000
#: seconds without a byte from a registry before a request is given up, naming the host
READ_TIMEOUT = 60.0


class ContentMemo(Protocol):
    """Small content (manifests, configs) kept by digest between resolutions."""

    def get(self, digest: str) -> bytes | None: ...

    def put(self, digest: str, data: bytes) -> None: ...


class DirectoryMemo:
    """A :class:`ContentMemo` of one file per digest; what is read is verified by the caller,
    so a damaged file only costs a fetch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, digest: str) -> Path | None:
        algorithm, _, hexa = digest.partition(":")
        return self.path / f"{algorithm}-{hexa}" if _BLOB_DIGEST.fullmatch(digest) else None

    def get(self, digest: str) -> bytes | None:
        where = self._file(digest)
        try:
            return where.read_bytes() if where is not None else None
        except OSError:
            return None

    def put(self, digest: str, data: bytes) -> None:
        where = self._file(digest)
        if where is None or self.get(digest) == data:  # kept already (a tag asked again)
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = where.with_name(f".{where.name}.{os.getpid()}.{id(data)}")
            tmp.write_bytes(data)
            tmp.replace(where)
        except OSError:  # a full or read-only disk costs only a later fetch
            pass


class RegistryClient:
    """One client per event loop (``async with``); tokens are kept per host and repository."""

    def __init__(
        self,
        config: RegistryConfig | None = None,
        tokens: dict[tuple[str, str, str], str] | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = READ_TIMEOUT,
        proven: set[tuple[str, str, str, str]] | None = None,
    ) -> None:
        self.config = config or RegistryConfig()
        self.timeout = timeout
        self._verify = verify
        # made (or shared) on the first request, one per TLS context; closed if owned
        self._clients: dict[object, Client] = {}
        self._owned: list[Client] = []
        # Kept by the caller across clients: an event loop may end, a token stays good.
        self._tokens = {} if tokens is None else tokens
        self._proven = set() if proven is None else proven

    async def aclose(self) -> None:
        owned, self._owned, self._clients = self._owned, [], {}
        for client in owned:
            await client.aclose()

    def _http(self, endpoint: Endpoint) -> Client:
        """The HTTP client for ``endpoint``, made when first needed: a resolution answered
        from what was kept (a pinned digest) does not pay for one (its TLS context and pool).
        Within :func:`shared_connections` it is the block's, so a build's clients share
        connections. HTTPS uses the registry's ``[registry]`` TLS settings, if any; a
        plain-HTTP endpoint's redirect to HTTPS storage is verified with the machine's CAs
        alone, as buildkitd's resolver gives such an endpoint its default client (the bundle is
        read only if such a redirect comes)."""
        from llbkit.core.registry.tls import host_context

        verify: ssl.SSLContext | bool = True
        if endpoint.scheme == "https":
            settings = self.config.hosts.get(endpoint.name)
            verify = host_context(endpoint.name, settings) if settings else True
        if verify is True:
            verify = self._verify
        key = verify if isinstance(verify, bool) else id(verify)
        client = self._clients.get(key)
        if client is None:
            client, owned = build_client(verify, self.timeout)
            self._clients[key] = client
            if owned:
                self._owned.append(client)
        return client

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _proof(self, ref: Reference, digest: str) -> tuple[str, str, str, str]:
        """What records that the registry gave ``digest`` of ``ref``'s repository to whoever
        the running build belongs to (their credentials' identity, never the credentials)."""
        host = _host_of(ref.domain)
        return (host, ref.path, identity(await credentials(host)), digest)

    def _endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where ``ref`` is read from, in order: its mirrors', then its registry's endpoints."""
        names = [*self.config.mirrors(ref.domain), ref.domain]
        return [e for name in names for e in self.config.endpoints(name)]

    @asynccontextmanager
    async def _request(
        self, ref: Reference, kind: str, what: str, accept: str = ""
    ) -> AsyncIterator[Response]:
        """GET from the first host (mirror or the registry) that answers, authenticating."""
        from llbkit.core.registry.http import HTTPError

        last: str = ""
        endpoints = self._endpoints(ref)
        for endpoint in endpoints:
            scheme, host, _ = endpoint
            url = f"{scheme}://{host}/v2/{ref.path}/{kind}/{what}"
            http = self._http(endpoint)
            headers = {"Accept": accept} if accept else {}
            token = self._tokens.get((host, ref.path, identity(await credentials(host))))
            if token:
                headers["Authorization"] = token
            try:
                response = await http.send("GET", url, headers=headers)
                if response.status_code == 401:
                    await response.aclose()
                    auth = await self._authenticate(http, host, ref, response.headers)
                    headers["Authorization"] = auth
                    response = await http.send("GET", url, headers=headers)
            except HTTPError as err:
                last = f"{host}: {self._reason(err)}"
                continue
            if response.status_code >= 400:
                body = (await self._error_body(response)).decode("utf-8", "replace")[:200]
                await response.aclose()
                last = f"{url}: HTTP {response.status_code} {body.strip()}"
                if response.status_code in (401, 403):
                    raise RegistryAccessDenied(f"{ref}: access denied by {host} ({last})")
                if response.status_code == 404 and endpoint == endpoints[-1]:
                    raise ManifestUnknownError(f"{ref}: not found")  # as containerd says it
                continue
            try:
                yield response
            except HTTPError as err:  # the body stopped short
                raise RegistryError(
                    f"{ref}: {host} stopped sending {kind[:-1]} {what}: {self._reason(err)}"
                ) from None
            finally:
                await response.aclose()
            return
        raise RegistryError(f"{ref}: cannot reach the registry ({last})")

    def _reason(self, err: Exception) -> str:
        """Why a request failed, never empty."""
        from llbkit.core.registry.http import Timeout

        if isinstance(err, Timeout):
            return f"no answer for {self.timeout:g}s ({type(err).__name__})"
        return str(err) or type(err).__name__

    async def _error_body(self, response: Response) -> bytes:
        """The start of an error's body, for the message: never more than 64 kB (containerd's
        bound), and nothing when it stops short."""
        from llbkit.core.registry.http import HTTPError

        data = bytearray()
        try:
            async for chunk in response.aiter_bytes(16 << 10):
                data += chunk
                if len(data) >= 64000:
                    break
        except HTTPError:  # an unreadable error body: the status says enough
            pass
        return bytes(data[:64000])

    async def _read_small(self, response: Response, what: str) -> bytes:
        """A manifest's or config's bytes, refused past :data:`MAX_MANIFEST` however the
        registry sends them: a hostile one cannot make us hold gigabytes."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_MANIFEST:
            raise RegistryError(f"rejecting {declared} byte {what}: more than {MAX_MANIFEST}")
        data = bytearray()
        async for chunk in response.aiter_bytes(64 << 10):
            data += chunk
            if len(data) > MAX_MANIFEST:
                raise RegistryError(f"rejecting {what}: more than {MAX_MANIFEST} bytes")
        return bytes(data)

    async def _authenticate(
        self,
        http: Client,
        host: str,
        ref: Reference,
        headers: Headers,
        *,
        push: bool = False,
    ) -> str:
        """The ``Authorization`` for ``host``'s challenge in ``headers``; a token is asked for
        with the host's client (its TLS settings), as BuildKit's resolver asks."""
        scheme, params = _challenge(headers.get("www-authenticate", ""))
        if push and not params.get("scope"):
            params["scope"] = f"repository:{ref.path}:pull,push"
        creds = await credentials(host)
        if scheme == "basic":
            if creds is None:
                raise RegistryAccessDenied(f"{ref}: {host} needs credentials (docker login {host})")
            auth = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        elif scheme == "bearer" and params.get("realm"):
            query = {"scope": params.get("scope") or f"repository:{ref.path}:pull"}
            if params.get("service"):
                query["service"] = params["service"]
            response = await http.get(params["realm"], params=query, auth=creds)
            if response.status_code >= 400:
                raise RegistryAccessDenied(
                    f"{ref}: the token server of {host} refused "
                    f"(HTTP {response.status_code}); check the credentials for {host}"
                )
            data = _json(await response.aread(), f"{ref}: the token server of {host}'s answer")
            auth = "Bearer " + str(data.get("token") or data.get("access_token") or "")
        else:
            raise RegistryError(f"{ref}: {host} asks for unsupported authentication {scheme!r}")
        self._tokens[host, ref.path, identity(creds)] = auth
        return auth

    # -- pushing ---------------------------------------------------------------------------

    def _push_endpoint(self, ref: Reference) -> Endpoint:
        """Pushes go to the registry's first endpoint only, as containerd's pusher does."""
        return self.config.endpoints(ref.domain)[0]

    def _push_base(self, ref: Reference) -> str:
        scheme, host, _ = self._push_endpoint(ref)
        return f"{scheme}://{host}"

    async def _send(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        replay: Any = None,
    ) -> Response:
        """One request to the registry, authenticating (for push) on a 401."""
        from llbkit.core.registry.http import HTTPError

        endpoint = self._push_endpoint(ref)
        host = endpoint.host
        http = self._http(endpoint)
        sent = dict(headers or {})
        token = self._tokens.get((host, ref.path, identity(await credentials(host))))
        if token:
            sent["Authorization"] = token
        try:
            response = await http.request(method, url, headers=sent, content=content)
            if response.status_code == 401:
                sent["Authorization"] = await self._authenticate(
                    http, host, ref, response.headers, push=True
                )
                body = replay() if replay is not None else content
                response = await http.request(method, url, headers=sent, content=body)
        except HTTPError as err:
            raise RegistryError(f"{ref}: cannot reach {host}: {self._reason(err)}") from None
        if response.status_code in (401, 403):
            raise RegistryError(f"{ref}: {host} refused the push (HTTP {response.status_code})")
        return response

    async def has_blob(self, ref: Reference, digest: str) -> bool:
        url = f"{self._push_base(ref)}/v2/{ref.path}/blobs/{digest}"
        return (await self._send(ref, "HEAD", url)).status_code == 200

    async def mount_blob(self, ref: Reference, digest: str, from_repo: str) -> bool:
        """Ask the registry to link a blob another repository of it has; whether it did."""
        base = self._push_base(ref)
        url = f"{base}/v2/{ref.path}/blobs/uploads/?mount={digest}&from={from_repo}"
        return (await self._send(ref, "POST", url)).status_code == 201

    async def push_blob(self, ref: Reference, digest: str, data: bytes | Path) -> None:
        """Upload a blob (monolithic: POST for a location, then PUT with the digest); a file is
        streamed from disk, never read whole."""
        base = self._push_base(ref)
        start = await self._send(ref, "POST", f"{base}/v2/{ref.path}/blobs/uploads/")
        if start.status_code not in (201, 202):
            raise RegistryError(f"{ref}: cannot start an upload (HTTP {start.status_code})")
        location = start.headers.get("location", "")
        if location.startswith("/"):
            location = base + location
        # The location may carry state in its query: add the digest, keep the rest.
        joiner = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, Path):
            headers["Content-Length"] = str(data.stat().st_size)
        done = await self._send(
            ref,
            "PUT",
            f"{location}{joiner}digest={digest}",
            content=data if isinstance(data, bytes) else _file_chunks(data),
            headers=headers,
            replay=None if isinstance(data, bytes) else (lambda: _file_chunks(data)),
        )
        if done.status_code != 201:
            raise RegistryError(
                f"{ref}: upload of {digest} failed (HTTP {done.status_code} {done.text[:200]})"
            )

    async def push_manifest(
        self, ref: Reference, reference: str, data: bytes, media_type: str
    ) -> None:
        url = f"{self._push_base(ref)}/v2/{ref.path}/manifests/{reference}"
        done = await self._send(ref, "PUT", url, content=data, headers={"Content-Type": media_type})
        if done.status_code not in (200, 201):
            raise RegistryError(
                f"{ref}: the registry refused the manifest (HTTP {done.status_code} "
                f"{done.text[:200]})"
            )

    async def get_manifest(self, ref: Reference, reference: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, bytes) of a manifest or index, or ``None`` when it is missing."""
        try:
            async with self._request(ref, "manifests", reference, _ACCEPT) as response:
                data = await self._read_small(response, f"manifest for {ref}")
                media = response.headers.get("content-type", "").split(";")[0]
        except RegistryError as err:
            if isinstance(err, ManifestUnknownError):
                return None
            raise
        return digest_of(data), media, data

    async def _get_bytes(self, ref: Reference, kind: str, what: str, accept: str = "") -> bytes:
        async with self._request(ref, kind, what, accept) as response:
            return await self._read_small(response, f"{kind[:-1]} {what} of {ref}")

    async def _by_digest(
        self, ref: Reference, kind: str, digest: str, accept: str, memo: ContentMemo | None
    ) -> bytes:
        """What a digest names, from ``memo`` when it holds it, else fetched and verified."""
        data = memo.get(digest) if memo is not None else None
        if data is None or digest_of(data) != digest:
            data = await self._get_bytes(ref, kind, digest, accept)
            if digest_of(data) != digest:
                raise RegistryError(f"{ref}: {kind[:-1]} {digest} does not match its digest")
            if memo is not None:
                memo.put(digest, data)
        return data

    async def resolve(
        self,
        ref: Reference,
        platform: Platform,
        memo: ContentMemo | None = None,
        *,
        reuse: Literal["none", "proven", "any"] = "none",
    ) -> ResolvedImage:
        """The manifest for ``platform`` (through an index if there is one), and its config.

        The reference itself is asked for (a tag moves; credentials are checked); what it
        names by digest comes from ``memo`` when it was fetched before. A reference pinned to
        a digest that ``memo`` holds is not asked for either when ``reuse`` allows it, as
        BuildKit resolves a digest it has locally (what a digest names cannot change):
        ``any`` digest kept, or one the registry gave these same credentials (``proven``).
        """
        data = None
        media = ""
        if ref.digest and memo is not None and reuse != "none":
            kept = memo.get(ref.digest)
            if (
                kept is not None
                and digest_of(kept) == ref.digest
                and (reuse == "any" or await self._proof(ref, ref.digest) in self._proven)
            ):
                data = kept
        if data is None:
            what = ref.digest or ref.tag or "latest"
            async with self._request(ref, "manifests", what, _ACCEPT) as response:
                data = await self._read_small(response, f"manifest for {ref}")
                media = response.headers.get("content-type", "").split(";")[0]
            if per_client():  # only a daemon's clients are told apart by what they were given
                if len(self._proven) >= _PROVEN_LIMIT:
                    self._proven.clear()
                self._proven.add(await self._proof(ref, digest_of(data)))
        digest = digest_of(data)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"{ref}: manifest digest is {digest}, not {ref.digest}")
        if memo is not None:
            memo.put(digest, data)
        manifest = _json(data, f"{ref}: manifest")
        media = manifest.get("mediaType") or media
        index_digest = ""
        if media in INDEX_TYPES or "manifests" in manifest:
            index_digest = digest
            listed = manifest.get("manifests", [])
            if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
                raise RegistryError(f"{ref}: index: manifests is not a list of objects")
            chosen = [m for m in listed if platform_matches(m, platform)]
            if not chosen:
                have = ", ".join(
                    "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                    for p in (m.get("platform") or {} for m in manifest.get("manifests", []))
                )
                raise RegistryError(
                    f"no match for platform in manifest {digest}: not found (no image for "
                    f"{platform} in {ref}; the index has: {have})"
                )
            digest = str(chosen[0].get("digest"))
            if not _BLOB_DIGEST.fullmatch(digest):
                raise RegistryError(f"{ref}: index names {digest[:100]!r}, not a digest")
            data = await self._by_digest(ref, "manifests", digest, _ACCEPT, memo)
            manifest = _json(data, f"{ref}: manifest {digest}")
        config_desc = Descriptor.parse(manifest.get("config") or {}, f"{ref}: config")
        listed_layers = manifest.get("layers", [])
        if not isinstance(listed_layers, list):
            raise RegistryError(f"{ref}: manifest {digest}: layers is not a list")
        layers = [Descriptor.parse(d, f"{ref}: layer") for d in listed_layers]
        config_bytes = await self._by_digest(ref, "blobs", config_desc.digest, "", memo)
        config = _json(config_bytes, f"{ref}: config")
        return ResolvedImage(ref, digest, config, config_bytes, layers, index_digest)

    @asynccontextmanager
    async def blob(self, ref: Reference, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob (the caller verifies it against ``digest``)."""
        async with self._request(ref, "blobs", digest) as response:
            yield response.aiter_bytes(1 << 20)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    import anyio

    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(1 << 20):
            yield chunk


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except (ValueError, RecursionError):
        raise RegistryError(f"{what} is not JSON") from None
    if not isinstance(decoded, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return decoded
