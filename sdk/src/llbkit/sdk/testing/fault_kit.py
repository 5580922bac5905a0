"""A conformance kit for cache backends on a server that breaks, through :class:`FaultProxy`.

Every failure a service can throw at a backend (500, 503, 429 with or without ``Retry-After``,
a stall past ``timeout``, a body cut short, a reset connection) must reach core as
:class:`~llbkit.core.plugins.cache_backend.TransientCacheError` (``throttled`` for a 429), in one
line without a credential; core's retries then ride out a flaky server; and a write that breaks
leaves no partial blob.

    class TestS3Faults(CacheFaultKit):
        backend_class = S3CacheBackend
        flavor = "s3"

        @pytest.fixture(autouse=True)
        def _server(self, endpoint: str) -> None:
            self.upstream = endpoint

        def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
            return {"endpoint_url": url, ..., "timeout": str(self.timeout)}

A service whose signed URLs name a blob store elsewhere overrides :meth:`proxy` to route those
paths there through the same proxy (``FaultProxy(..., routes=...)``), and says with
:attr:`~CacheFaultKit.uploads` which requests carry a blob's bytes when they are not ``PUT``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llbkit.core.plugins.cache_backend import TransientCacheError
from llbkit.sdk.testing._doubles import MemoryClientIO, make_context
from llbkit.sdk.testing._kit_helpers import run
from llbkit.sdk.testing.faults import Fault, FaultProxy, Flavor, requests_to

__all__ = ["CacheFaultKit"]

_INDEX = b'{"layers":[],"records":[]}'
#: the faults every call must meet as transient, and whether each asks to slow down (a 503 may:
#: S3's ServiceUnavailable and Azure's ServerBusy do)
_FAULTS: dict[str, tuple[Callable[[float], Fault], bool | None]] = {
    "500": (lambda t: Fault.fail(every=1, statuses=(500,)), False),
    "503": (lambda t: Fault.fail(every=1, statuses=(503,)), None),
    "429": (lambda t: Fault.throttle(every=1), True),
    "429-retry-after": (lambda t: Fault.throttle(every=1, retry_after="1"), True),
    "stall": (lambda t: Fault.stall(4 * t), False),
    "stall-midway": (lambda t: Fault.stall(4 * t, midway=True), False),
    "truncate": (lambda t: Fault.truncate(), False),
    "reset": (lambda t: Fault.reset(), False),
}
#: faults of a body on its way back: only calls that read one meet them
_BODY_FAULTS = frozenset({"stall-midway", "truncate"})


class CacheFaultKit:
    """Checks for a cache backend whose server breaks. Set ``backend_class`` and ``flavor``
    (whose error bodies the proxy answers with), give :attr:`upstream` (the real server's base
    URL; an autouse fixture sets it) and override :meth:`attrs` to point at ``url`` (the
    proxy's, in its place) with ``timeout`` set to :attr:`timeout`."""

    backend_class: ClassVar[type]
    flavor: ClassVar[Flavor] = "generic"
    #: seconds of the ``timeout=`` :meth:`attrs` gives; a stall lasts four times as long
    timeout: ClassVar[float] = 0.3
    #: what no message may show (the credentials and signed queries :meth:`attrs` gives)
    secrets: ClassVar[tuple[str, ...]] = ()
    #: the size of the blob a write that breaks must not leave behind: one that goes in parts
    #: when the backend uploads large blobs in parts
    blob_size: ClassVar[int] = 256 << 10
    #: the requests that carry a blob's bytes, as ``(method, part of the path)``: a write that
    #: breaks has them fail (the gha v1 service takes its chunks with ``PATCH``)
    uploads: ClassVar[tuple[str, str]] = ("PUT", "")
    upstream: str

    def attrs(self, url: str, tmp_path: Path) -> Mapping[str, str]:
        raise NotImplementedError("point the backend at url, with timeout= set")

    def proxy(self) -> FaultProxy:
        """The proxy in front of :attr:`upstream` (not entered yet) that :meth:`attrs` points
        the backend at."""
        return FaultProxy(self.upstream, self.flavor)

    async def _open(self, url: str, tmp_path: Path) -> Any:
        driver = self.backend_class(make_context("fault-kit", state_dir=tmp_path))
        client = MemoryClientIO(tree_root=tmp_path / "client")
        return await driver.resolve(dict(self.attrs(url, tmp_path)), "export", client)

    def _scenario(
        self, tmp_path: Path, proxy: FaultProxy, use: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        async def scenario() -> Any:
            store = await self._open(proxy.url, tmp_path)
            try:
                return await use(store)
            finally:
                await store.aclose()

        return run(scenario())

    def _assert_said_well(self, err: BaseException) -> None:
        message = str(err)
        assert message and "\n" not in message, f"not one line: {message!r}"
        for secret in self.secrets:
            assert secret not in message, f"the message shows {secret!r}: {message}"
        assert err.__cause__ is None, "a transient failure chains no exception (a traceback)"
        assert err.__suppress_context__ or err.__context__ is None, err.__context__

    @pytest.mark.parametrize("fault", list(_FAULTS))
    def test_every_fault_is_transient_and_said_in_one_line(
        self, tmp_path: Path, fault: str
    ) -> None:
        make, throttled = _FAULTS[fault]
        blob = _blob(b"kept", 64 << 10)
        fresh = _blob(b"new", 64 << 10)
        calls: dict[str, Callable[[Any], Awaitable[object]]] = {
            "read_index": lambda store: store.read_index(),
            "read_blob": lambda store: _read(store, _digest(blob)),
            "has_blob": lambda store: store.has_blob(_digest(blob)),
            "write_blob": lambda store: store.write_blob(_digest(fresh), len(fresh), _once(fresh)),
            "write_index": lambda store: store.write_index(_INDEX),
        }
        if fault in _BODY_FAULTS:
            calls = {name: calls[name] for name in ("read_index", "read_blob")}
        failures: dict[str, BaseException] = {}

        from llbkit.core.control.cache_calls import retried  # the engine's: not imported early

        async def use(store: Any) -> None:
            # Before the fault, through the engine's retries: a busy machine may take longer
            # than timeout= to answer while nothing is broken.
            await retried(lambda: store.write_blob(_digest(blob), len(blob), _once(blob)))
            await retried(lambda: store.write_index(_INDEX))
            proxy.fault = make(self.timeout)
            for name, call in calls.items():
                began = time.monotonic()
                with pytest.raises(TransientCacheError) as err:
                    await call(store)
                failures[name] = err.value
                took = time.monotonic() - began
                # Bounded by timeout= (a cut download may be tried by the service's SDK too).
                assert took < 4 * self.timeout + 3, f"{name} took {took:.1f}s"

        with self.proxy() as proxy:
            self._scenario(tmp_path, proxy, use)
        for name, err in failures.items():
            if throttled is not None:
                assert getattr(err, "throttled", None) is throttled, f"{name}: {err} ({fault})"
            self._assert_said_well(err)

    @pytest.mark.parametrize("fault", ["fail-half", "429-half"])
    def test_core_rides_out_a_flaky_service(self, tmp_path: Path, fault: str) -> None:
        """Half the requests fail (each the first time it is asked): core's retries get every
        call through, and what comes back is what went in."""
        from llbkit.core.control.cache_calls import retried  # the engine's: not imported early

        breaking = Fault.fail(every=2) if fault == "fail-half" else Fault.throttle(every=2)
        blob = _blob(b"flaky", 300 << 10)
        digest = _digest(blob)

        async def use(store: Any) -> tuple[bool, bool, bytes, bytes | None]:
            # A call that is several requests (a missing container made first) could meet a
            # failure at each try: the cache exists before the service turns flaky.
            await retried(lambda: store.write_index(b"{}"))
            proxy.fault = breaking
            before = await retried(lambda: store.has_blob(digest))
            await retried(lambda: store.write_blob(digest, len(blob), _once(blob)))
            await retried(lambda: store.write_index(_INDEX))
            after = await retried(lambda: store.has_blob(digest))
            back = await retried(lambda: _read(store, digest))
            return before, after, back, await retried(store.read_index)

        with self.proxy() as proxy:
            before, after, back, index = self._scenario(tmp_path, proxy, use)
        assert not before and after
        assert back == blob
        assert index == _INDEX
        refused = {429} if fault == "429-half" else {500, 503}
        assert any(status in refused for _, _, status in proxy.requests), proxy.requests

    @pytest.mark.parametrize("fault", ["500", "stall", "reset", "every-other-put"])
    def test_a_write_that_breaks_leaves_no_partial_blob(self, tmp_path: Path, fault: str) -> None:
        """The upload fails; the blob is then either absent or whole, never part of itself."""
        from llbkit.core.control.cache_calls import retried  # the engine's: not imported early

        puts = requests_to(*self.uploads)
        breaking = {
            "500": Fault.fail(every=1, statuses=(500,), only=puts),
            "stall": Fault.stall(4 * self.timeout, only=puts),  # the server finishes it
            "reset": Fault.reset(only=puts),
            # A blob sent in parts (or blocks) loses some of them.
            "every-other-put": Fault.fail(every=2, per_url=False, only=puts),
        }[fault]
        blob = _blob(b"partial", self.blob_size)
        digest = _digest(blob)

        async def use(store: Any) -> tuple[bool, bytes]:
            proxy.fault = breaking
            with pytest.raises(TransientCacheError) as err:
                await store.write_blob(digest, len(blob), _once(blob))
            self._assert_said_well(err.value)
            proxy.fault = Fault.none()  # what follows retries as the engine does
            there = await retried(lambda: store.has_blob(digest))
            return there, (await retried(lambda: _read(store, digest)) if there else b"")

        with self.proxy() as proxy:
            there, back = self._scenario(tmp_path, proxy, use)
        assert not there or back == blob, f"a partial blob is visible: {len(back)} bytes"


def _blob(seed: bytes, size: int) -> bytes:
    """``size`` bytes that do not compress to nothing (a proxy halving them cuts real data)."""
    block = hashlib.sha256(seed).digest() * 1024
    return (block * (size // len(block) + 1))[:size]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(store: Any, digest: str) -> bytes:
    return b"".join([chunk async for chunk in store.read_blob(digest)])
