"""Finding plugins: named drivers from entry points, observers through pluggy.

The composition root (the CLI, the engine) builds one :class:`PluginRegistry` and passes it down;
nothing loads at import time. Listing reads the entry-point index (:mod:`.entrypoints`) and never
imports a plugin; loading imports exactly the plugin that was asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from llbkit.core.errors import (
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PluginVersionError,
    UnknownPluginError,
)
from llbkit.core.plugins import cache_backend, exporter, frontend, hookspecs, source, worker
from llbkit.core.plugins.context import DNSConfig, PluginContext
from llbkit.core.plugins.entrypoints import Entry, index, load_target
from llbkit.core.plugins.registries import Registries

__all__ = [
    "DISABLE_ENV",
    "DRIVER_GROUPS",
    "ESSENTIAL_DISTRIBUTIONS",
    "HOOKS_GROUP",
    "PluginInfo",
    "PluginRegistry",
    "TRACE_ENV",
]

DISABLE_ENV = "LLBKIT_DISABLE_PLUGINS"
TRACE_ENV = "LLBKIT_TRACE_PLUGINS"
HOOKS_GROUP = "llbkit.hooks"

#: entry-point group -> (the word users see in messages, contract version core provides)
DRIVER_GROUPS: Mapping[str, tuple[str, int]] = {
    "llbkit.frontends": ("frontend", frontend.API_VERSION),
    "llbkit.workers": ("worker", worker.API_VERSION),
    "llbkit.exporters": ("exporter", exporter.API_VERSION),
    "llbkit.cache_backends": ("cache backend", cache_backend.API_VERSION),
    "llbkit.sources": ("source", source.API_VERSION),
}

#: Built-ins that LLBKIT_DISABLE_PLUGINS cannot switch off: without them nothing builds.
ESSENTIAL_DISTRIBUTIONS = frozenset({"llbkit-core"})


@dataclass(frozen=True, order=True)
class PluginInfo:
    """An installed entry point, read from metadata without importing it."""

    group: str
    name: str
    distribution: str
    version: str
    value: str
    disabled: bool = False

    @property
    def label(self) -> str:
        """``name (distribution version)``, the form every message uses."""
        return f"{self.name} ({self.distribution} {self.version})"


def _info(entry: Entry) -> PluginInfo:
    return PluginInfo(entry.group, entry.name, entry.distribution, entry.version, entry.value)


def _parse_disabled(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


class PluginRegistry:
    """What is installed, what is enabled, and how to load it.

    :param disabled: names to leave out (``name``, ``group:name`` or a distribution name;
        ``*`` for every plugin not in :data:`ESSENTIAL_DISTRIBUTIONS`).
    :param known: ``(group, name) -> distribution`` for suggesting what to install.
    :param trace: print every plugin load and hook call to standard error.
    """

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        known: Mapping[tuple[str, str], str] | None = None,
        trace: bool = False,
    ) -> None:
        self._disabled = frozenset(disabled)
        self._known = known  # None: the table of llbkit's own distributions, read when needed
        self._trace = trace
        self._test_drivers: Mapping[str, Mapping[str, Any]] | None = None
        self._test_hooks: Sequence[object] = ()
        self.warnings: list[str] = []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PluginRegistry:
        """The registry a user's process gets, honouring ``LLBKIT_DISABLE_PLUGINS`` and tracing."""
        return cls(
            disabled=_parse_disabled(environ.get(DISABLE_ENV, "")),
            trace=environ.get(TRACE_ENV, "") not in ("", "0"),
        )

    @classmethod
    def for_testing(
        cls,
        drivers: Mapping[str, Mapping[str, Any]],
        hooks: Sequence[object] = (),
        known: Mapping[tuple[str, str], str] | None = None,
    ) -> PluginRegistry:
        """A registry over in-memory drivers (``{group: {name: factory}}``) and hook objects.

        Nothing is read from the installed metadata, so tests see exactly what they give.
        """
        registry = cls(known={} if known is None else known)
        registry._test_drivers = drivers
        registry._test_hooks = tuple(hooks)
        return registry

    # -- listing (never imports a plugin) --------------------------------------------------------

    def _is_disabled(self, info: PluginInfo) -> bool:
        if info.distribution in ESSENTIAL_DISTRIBUTIONS or not self._disabled:
            return False
        return bool(
            {"*", info.name, f"{info.group}:{info.name}", info.distribution} & self._disabled
        )

    def plugins(self, group: str) -> list[PluginInfo]:
        """Every entry point of ``group``, sorted by name, disabled ones flagged."""
        if self._test_drivers is not None:
            return [
                PluginInfo(group, name, "test", "0", repr(obj))
                for name, obj in sorted(self._test_drivers.get(group, {}).items())
            ]
        found = [_info(entry) for entry in index().get(group, ())]
        return sorted(
            PluginInfo(i.group, i.name, i.distribution, i.version, i.value, self._is_disabled(i))
            for i in found
        )

    def names(self, group: str) -> list[str]:
        """The enabled names in ``group``."""
        return sorted({i.name for i in self.plugins(group) if not i.disabled})

    def _one(self, group: str, name: str) -> PluginInfo:
        kind = DRIVER_GROUPS.get(group, (group, 0))[0]
        matches = [i for i in self.plugins(group) if i.name == name]
        enabled = [i for i in matches if not i.disabled]
        if len(enabled) > 1:
            both = " and ".join(i.label for i in enabled)
            raise PluginConflictError(
                f"{kind} {name!r} is provided twice: {both}; uninstall one of them"
            )
        if enabled:
            return enabled[0]
        if matches:
            info = matches[0]
            tokens = {"*", info.name, f"{info.group}:{info.name}", info.distribution}
            token = sorted(tokens & self._disabled)[0]
            raise PluginError(
                f"{kind} {info.label} is disabled by {DISABLE_ENV}; "
                f"remove {token!r} from it to use it"
            )
        known = self._known
        if known is None:
            from llbkit.core.plugins._known import KNOWN_DISTRIBUTIONS

            known = KNOWN_DISTRIBUTIONS
        raise UnknownPluginError(kind, name, self.names(group), known.get((group, name)))

    # -- loading ----------------------------------------------------------------------------

    def load_driver(self, group: str, name: str) -> Any:
        """Import and return the factory registered as ``name`` in ``group``.

        Checks the name before importing anything, imports only that entry point, and checks
        that it targets the contract version core provides.
        """
        return self._load(self._one(group, name))

    def _load(self, info: PluginInfo) -> Any:
        kind, version = DRIVER_GROUPS.get(info.group, (info.group, 0))
        self._say(f"loading {kind} {info.label} from {info.value}")
        if self._test_drivers is not None:
            factory = self._test_drivers[info.group][info.name]
        else:
            factory = self._import(kind, info)
        if version:
            self._check_version(kind, info, factory, version)
        return factory

    @staticmethod
    def _import(kind: str, info: PluginInfo) -> Any:
        try:
            return load_target(info.value)
        # A plugin's import may raise anything; it becomes one line naming the plugin.
        except Exception as err:
            raise PluginLoadError(
                f"{kind} {info.label} failed to load from {info.value}: {type(err).__name__}: {err}"
            ) from err

    @staticmethod
    def _check_version(kind: str, info: PluginInfo, factory: Any, version: int) -> None:
        declared = getattr(factory, "api_version", None)
        if not isinstance(declared, int):
            raise PluginLoadError(
                f"{kind} {info.label} does not declare api_version; "
                f"set `api_version = {version}` on {info.value}"
            )
        if declared != version:
            raise PluginVersionError(
                f"{kind} {info.label} targets contract v{declared}, core provides v{version}; "
                f"install a version of {info.distribution} made for this llbkit"
            )

    def create_driver(
        self,
        group: str,
        name: str,
        config: Mapping[str, Any] | None = None,
        state_dir: Path | None = None,
        registries: Registries | None = None,
        *,
        dns: DNSConfig | None = None,
    ) -> Any:
        """Load ``name`` and construct it with its :class:`PluginContext`."""
        info = self._one(group, name)
        factory = self._load(info)
        from llbkit.core.cachedir import cache_dir

        shared = cache_dir()
        ctx = PluginContext(
            name=name,
            distribution=f"{info.distribution} {info.version}",
            config=dict(config or {}),
            state_dir=state_dir,
            registries=registries,
            dns=dns,
            cache_dir=shared / "drivers" / group / name if shared is not None else None,
        )
        return factory(ctx)

    # -- hooks ----------------------------------------------------------------------------------

    def hook_manager(self) -> pluggy.PluginManager:
        """A plugin manager with llbkit's hookspecs and every enabled ``llbkit.hooks`` plugin.

        Each hook plugin loads in its own try: one that fails to import or has a bad hook
        signature is left out with a warning (in :attr:`warnings`), and the rest still work.
        """
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        if self._trace:
            pm.trace.root.setwriter(lambda text: sys.stderr.write(f"[plugins] {text}"))
            pm.enable_tracing()
        if self._test_drivers is not None:
            for obj in self._test_hooks:
                pm.register(obj)
            return pm
        for info in self.plugins(HOOKS_GROUP):
            if info.disabled:
                continue
            try:
                pm.register(load_target(info.value), name=info.name)
            # A broken observer must not stop the command; say which one and go on.
            except pluggy.PluginValidationError as err:
                self.warnings.append(f"hook plugin {info.label} left out: {err}")
            except Exception as err:
                self.warnings.append(
                    f"hook plugin {info.label} left out: {type(err).__name__}: {err}"
                )
        return pm

    def _say(self, text: str) -> None:
        if self._trace:
            sys.stderr.write(f"[plugins] {text}\n")
