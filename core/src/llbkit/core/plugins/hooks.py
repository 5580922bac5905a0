"""Calling hooks: through pluggy's hook callers, one plugin at a time, so that tracing
(``LLBKIT_TRACE_PLUGINS``) shows every call and one failing plugin never keeps the others from
being called."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from llbkit.core.plugins.progress import ProgressEvent

__all__ = ["HookCaller"]


class HookCaller:
    """The hooks of one plugin manager, called plugin by plugin."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._callers: dict[tuple[str, str], Any] = {}

    def _each(self, hook: str) -> Iterator[tuple[str, Callable[..., Any]]]:
        """``(plugin name, caller of just that plugin's implementation)``, in pluggy's
        calling order (last registered first)."""
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            key = (hook, impl.plugin_name)
            if key not in self._callers:
                others = [p for p in self.pm.get_plugins() if p is not impl.plugin]
                self._callers[key] = self.pm.subset_hook_caller(hook, remove_plugins=others)
            yield impl.plugin_name, self._callers[key]

    def has(self, hook: str) -> bool:
        """Whether any plugin implements ``hook`` (so delivery can be skipped)."""
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    def add_commands(self, cli: Any, announce: Callable[[str], None]) -> None:
        """``llbkit_add_commands``; ``announce(plugin)`` is told who adds before it does."""
        for name, call in self._each("llbkit_add_commands"):
            announce(name)
            call(cli=cli)

    def on_progress(self, ref: str, event: ProgressEvent) -> list[tuple[str, str]]:
        """``llbkit_on_progress`` for one record; returns ``(plugin, one line)`` for each
        observer that failed."""
        failures = []
        for name, call in self._each("llbkit_on_progress"):
            try:
                call(ref=ref, event=event)
            # Third-party observer code may raise anything; report it, keep building.
            except Exception as err:
                failures.append(
                    (name, f"progress observer {name!r} failed: {type(err).__name__}: {err}")
                )
        return failures
