"""The plugin drivers one engine uses: each constructed once, on first use, with its context.

Built by the composition root and handed to the controller and the solver alike, so the solver
asks this (a lower layer) for sources and the worker, never the controller above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio

from llbkit.core.config import WORKER_ENGINE_KEYS, EngineConfig
from llbkit.core.errors import PluginError, UserError
from llbkit.core.plugins import (
    GROUP_CACHE_BACKENDS,
    GROUP_EXPORTERS,
    GROUP_FRONTENDS,
    GROUP_SOURCES,
    GROUP_WORKERS,
)
from llbkit.core.plugins.cache_backend import CacheBackend
from llbkit.core.plugins.context import DNSConfig, Platform
from llbkit.core.plugins.exporter import Exporter
from llbkit.core.plugins.frontend import Frontend
from llbkit.core.plugins.imagestore import ImageStore, UsesImageStore, WithImageStore
from llbkit.core.plugins.reaping import Reaping
from llbkit.core.plugins.registry import PluginRegistry
from llbkit.core.plugins.source import ImageResolver, Source, SourceJob
from llbkit.core.plugins.worker import Executor, Worker
from llbkit.core.registry.access import EngineRegistries

__all__ = ["Drivers"]


class Drivers:
    """Driver instances by group and name, for one engine and its state root."""

    def __init__(self, registry: PluginRegistry, config: EngineConfig, root: Path) -> None:
        self.registry = registry
        self.config = config
        self.root = root
        self.registries = EngineRegistries(config.registry)
        self.dns = _dns_config(config.dns)
        self._drivers: dict[tuple[str, str], Any] = {}
        self._executor: Executor | None = None
        self._others: dict[str, Executor] = {}  # the enabled workers besides the default
        self._left_out: set[str] = set()  # ``auto`` ones that could not start (not retried)
        self._starting: anyio.Lock | None = None  # made in the event loop that needs it

    def state_dir(self, group: str, name: str) -> Path:
        """The plugin's own folder in the state root (made when its driver is)."""
        return self.root / "plugins" / group / name

    def _driver(self, group: str, name: str) -> Any:
        if (group, name) not in self._drivers:
            state = self.state_dir(group, name)
            state.mkdir(parents=True, exist_ok=True)
            self._drivers[group, name] = self.registry.create_driver(
                group, name, state_dir=state, registries=self.registries, dns=self.dns
            )
        return self._drivers[group, name]

    def frontend(self, name: str) -> Frontend:
        found: Frontend = self._driver(GROUP_FRONTENDS, name)
        return found

    def exporter(self, name: str) -> Exporter:
        found: Exporter = self._driver(GROUP_EXPORTERS, name)
        return found

    def cache_backend(self, name: str) -> CacheBackend:
        found: CacheBackend = self._driver(GROUP_CACHE_BACKENDS, name)
        return found

    def source(self, scheme: str) -> Source:
        found: Source = self._driver(GROUP_SOURCES, scheme)
        if isinstance(found, UsesImageStore):
            found.use_image_store(self._sources_image_store)
        return found

    async def _sources_image_store(self) -> ImageStore | None:
        """The image store for sources: only a worker that says it keeps images
        (``keeps_images = True``, containerd's) is started for it."""
        if self._executor is None:
            if self.config.worker.get("enabled", True) is False:
                return None
            try:
                worker = self._driver(GROUP_WORKERS, self.config.worker_name)
            except PluginError:
                return None
            if not getattr(worker, "keeps_images", False):
                return None
        return await self.image_store()

    async def source_job(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> SourceJob:
        """Parse a SourceOp with the source its scheme names."""
        scheme, sep, _ = identifier.partition("://")
        if not sep:
            raise UserError(f"invalid source identifier {identifier!r}: no scheme")
        return await self.source(scheme).resolve(identifier, attrs, platform)

    def image_resolver(self) -> ImageResolver:
        """What looks images up for frontends: the ``docker-image`` source."""
        driver = self.source("docker-image")
        if not isinstance(driver, ImageResolver):
            raise PluginError(
                "the docker-image source installed does not resolve image configs "
                "(it must implement ImageResolver)"
            )
        return driver

    async def executor(self) -> Executor:
        """The chosen worker's executor (``[worker.oci]`` unless disabled, then
        ``[worker.containerd]``), started on first use (once: steps that start
        together wait for the one start, which may stop what a killed owner left running)."""
        if self._executor is not None:
            return self._executor
        if self._starting is None:
            self._starting = anyio.Lock()
        async with self._starting:
            if self._executor is None:
                name = self.config.worker_name
                if self.config.worker.get("enabled", True) is False:
                    raise UserError(
                        f"[worker.{name}] is disabled (enabled = false) and no other worker is "
                        "enabled: nothing runs processes"
                    )
                worker: Worker = self._driver(GROUP_WORKERS, name)
                own = {k: v for k, v in self.config.worker.items() if k not in WORKER_ENGINE_KEYS}
                self._executor = await worker.resolve(own)
        return self._executor

    async def executors(self) -> list[tuple[str, Executor]]:
        """Every enabled worker's executor, the default first (``ListWorkers``); builds run
        on the default. Another worker left at BuildKit's ``auto`` (no ``enabled``) that
        cannot start is left out, as buildkitd leaves it out; one enabled outright says why."""
        found = [(self.config.worker_name, await self.executor())]
        assert self._starting is not None
        for name in self.config.enabled_workers()[1:]:
            if name in self._left_out:
                continue
            async with self._starting:
                if name not in self._others:
                    section = self.config.workers.get(name, {})
                    own = {k: v for k, v in section.items() if k not in WORKER_ENGINE_KEYS}
                    try:
                        worker: Worker = self._driver(GROUP_WORKERS, name)
                        self._others[name] = await worker.resolve(own)
                    except (UserError, PluginError):
                        if section.get("enabled") is True:
                            raise
                        self._left_out.add(name)
                        continue
            found.append((name, self._others[name]))
        return found

    async def image_store(self) -> ImageStore | None:
        """The worker's image store (containerd's), starting the worker if needed; ``None``
        for a worker without one, or one that cannot start (an export does not need it)."""
        try:
            executor = await self.executor()
        except UserError:
            return None
        return executor.image_store if isinstance(executor, WithImageStore) else None

    async def reap_orphans(self) -> list[str]:
        """The containers a killed owner of this state root left running, now stopped: the
        worker's ``reap`` (:class:`~llbkit.core.plugins.reaping.Reaping`), if it has one."""
        if self._executor is not None or self.config.worker.get("enabled", True) is False:
            return []  # a started executor stopped them as it started
        try:
            worker: Worker = self._driver(GROUP_WORKERS, self.config.worker_name)
        except PluginError:  # no usable worker: a build that runs a process says why
            return []
        if not isinstance(worker, Reaping):
            return []
        own = {k: v for k, v in self.config.worker.items() if k not in WORKER_ENGINE_KEYS}
        return list(await worker.reap(own))

    async def aclose(self) -> None:
        """Stop the workers' processes, if they were started: every one of them, even when
        another fails to stop (the first failure is raised once all were tried)."""
        executors = [*self._others.values()]
        if self._executor is not None:
            executors.append(self._executor)
        self._others, self._executor = {}, None
        await close_all(executors)


class _Closable(Protocol):
    async def aclose(self) -> None: ...


async def close_all(closables: Iterable[_Closable]) -> None:
    """Close each of ``closables``, every one even if one before it fails; the first failure
    is raised once all were tried."""
    failure: BaseException | None = None
    for closable in closables:
        try:
            await closable.aclose()
        except Exception as err:  # the others are closed all the same
            failure = failure or err
    if failure is not None:
        raise failure


def _dns_config(dns: dict[str, list[str]] | None) -> DNSConfig | None:
    """``buildkitd.toml``'s ``[dns]`` as every driver is given it (``None`` without one)."""
    if dns is None:
        return None
    return DNSConfig(
        tuple(dns.get("nameservers", ())),
        tuple(dns.get("options", ())),
        tuple(dns.get("searchDomains", ())),
    )
