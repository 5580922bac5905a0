"""Reading a ``[worker.*]`` section of ``buildkitd.toml`` as every worker plugin reads it.

The engine hands a worker its section (minus the keys it keeps: ``enabled``, ``gc*``,
``max-parallelism``); these check the keys all of BuildKit's workers share, naming the section
in every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from llbkit.core.errors import ConfigError
from llbkit.core.plugins.context import Platform

__all__ = ["Sandbox", "labels", "platforms", "sandbox", "strings"]


class Sandbox(NamedTuple):
    """What a worker's configuration says of every step's sandbox: ``cgroup_parent``
    (``defaultCgroupParent``) is where steps' cgroups go unless a step names its own parent."""

    cgroup_parent: str = ""


def strings(config: Mapping[str, object], key: str, section: str) -> list[str]:
    """``key`` as a list of strings (empty when absent)."""
    value: Any = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{section} {key} must be a list of strings")
    return list(value)


def platforms(config: Mapping[str, object], section: str) -> list[Platform]:
    """``platforms``, parsed (``os/arch[/variant]``); the host's when absent."""
    found = []
    for text in strings(config, "platforms", section):
        try:
            found.append(Platform.parse(text))
        except ValueError:
            raise ConfigError(f"{section} platforms: {text!r} is not os/arch[/variant]") from None
    return found or [Platform()]


def labels(config: Mapping[str, object], section: str, own: Mapping[str, str]) -> dict[str, str]:
    """The worker's ``own`` labels with the section's ``labels`` table over them."""
    extra: Any = config.get("labels") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{section} labels must be a table")
    return {**own, **{str(k): str(v) for k, v in extra.items()}}


def sandbox(config: Mapping[str, object], section: str) -> Sandbox:
    """What the OCI worker's steps run in: ``defaultCgroupParent``. ``noProcessSandbox``
    is refused as BuildKit refuses it without a rootless daemon, which llbkit has not."""
    if config.get("noProcessSandbox", False) is not False:
        raise ConfigError(
            f"{section} noProcessSandbox: can't enable NoProcessSandbox without Rootless "
            "(llbkit has no rootless mode in this release)"
        )
    parent = config.get("defaultCgroupParent", "")
    if not isinstance(parent, str):
        raise ConfigError(f"{section} defaultCgroupParent must be a string")
    return Sandbox(cgroup_parent=parent)
