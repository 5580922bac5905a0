"""The engine's configuration: ``buildkitd.toml``'s keys, as BuildKit users write them.

Keys llbkit implements are read; BuildKit keys it does not implement yet are accepted and
listed by :attr:`EngineConfig.unused` so the CLI can say they have no effect; anything else is
refused with the key's dotted name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llbkit.core.entitlements import ENTITLEMENTS
from llbkit.core.errors import ConfigError
from llbkit.core.known_platforms import platform_problem
from llbkit.core.units import parse_bytes, parse_duration

__all__ = [
    "EngineConfig",
    "GCRule",
    "default_gc_rules",
    "load_config",
]

_TOP = {
    "llbkit",
    "root",
    "debug",
    "trace",
    "entitlements",
    "insecure-entitlements",
    "grpc",
    "registry",
    "worker",
    "dns",
    "history",
    "frontend",
    "cdi",
    "otel",
    "system",
    "log",
}
#: keys of a ``[worker.*]`` section the engine reads itself; the worker plugin gets the rest
WORKER_ENGINE_KEYS = frozenset(
    {
        "enabled",
        "gc",
        "gckeepstorage",
        "gcpolicy",
        "gcreservedspace",
        "gcmaxusedspace",
        "gcminfreespace",
        "max-parallelism",
    }
)
_WORKER = {
    "enabled",
    "platforms",
    "snapshotter",
    "rootless",
    "noProcessSandbox",
    "gc",
    "gckeepstorage",
    "gcpolicy",
    "max-parallelism",
    "binary",
    "apparmor-profile",
    "selinux",
    "cniPoolSize",
    "labels",
    "networkMode",
    "cniConfigPath",
    "cniBinaryPath",
    "userRemapUnsupported",
    "address",
    "namespace",
    "runtime",
    "defaultCgroupParent",
    "gcreservedspace",
    "gcmaxusedspace",
    "gcminfreespace",
}
_WORKER_KEYS = {"oci": _WORKER, "containerd": _WORKER}
#: gcpolicy rule keys accepted but without effect yet (reported in ``unused``)
_RULE_UNUSED = {"reservedSpace", "maxUsedSpace", "minFreeSpace"}
_RULE = {"all", "keepBytes", "keepDuration", "filters"} | _RULE_UNUSED
_USED = {
    "llbkit.root",
    "llbkit.max-layer-entries",
    "llbkit.max-layer-size",
    "history.maxAge",
    "history.maxEntries",
    "dns.nameservers",
    "dns.options",
    "dns.searchDomains",
    "worker.oci.gc",
    "worker.oci.gckeepstorage",
    "worker.oci.gcpolicy",
    "worker.oci.max-parallelism",
    "worker.oci.enabled",
    "worker.containerd.enabled",
    "worker.containerd.address",
    "worker.containerd.namespace",
    "worker.containerd.snapshotter",
    "worker.containerd.platforms",
    "worker.containerd.labels",
    "worker.containerd.gc",
    "worker.containerd.gckeepstorage",
    "worker.containerd.gcpolicy",
    "worker.containerd.max-parallelism",
    "worker.oci.binary",
    "worker.oci.platforms",
    "worker.oci.labels",
    "worker.oci.noProcessSandbox",
    "worker.oci.defaultCgroupParent",
    "insecure-entitlements",
    "registry",
    "debug",
    "grpc.address",
    "grpc.uid",
    "grpc.gid",
    "grpc.tls.cert",
    "grpc.tls.key",
    "grpc.tls.ca",
}
_GRPC = {"address", "debugAddress", "uid", "gid", "tls"}
_TLS = {"cert", "key", "ca"}


@dataclass(frozen=True)
class GCRule:
    """One ``gcpolicy`` rule: prune what ``filters`` select down to ``keep_bytes``."""

    all: bool = False
    keep_bytes: int = 0
    keep_duration: float = 0.0
    filters: tuple[str, ...] = ()


@dataclass
class EngineConfig:
    """What the engine reads from its config file."""

    root: Path | None = None
    #: ``[llbkit] max-layer-entries``: the entries one image layer may hold
    max_layer_entries: int = 10_000_000
    #: ``[llbkit] max-layer-size``: the bytes one layer's tar stream may expand to (1 TiB)
    max_layer_size: int = 1 << 40
    gc: bool = True
    gc_keep_storage: int = 0
    gc_rules: list[GCRule] = field(default_factory=list)
    max_parallelism: int = 0
    worker: dict[str, Any] = field(default_factory=dict)
    insecure_entitlements: list[str] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    #: other things the config's reader should be told (one line each)
    warnings: list[str] = field(default_factory=list)
    source: str = "<defaults>"
    #: seconds between GC runs after builds (BuildKit: at most once a minute)
    gc_interval: float = 60.0
    #: ``debug``: llbkitd logs each request
    debug: bool = False
    #: ``[grpc]``: where llbkitd listens, who owns its unix sockets, its TLS files
    grpc: GrpcConfig = field(default_factory=lambda: GrpcConfig())  # noqa: PLW0108 - defined below
    #: ``[history] maxAge`` (seconds) and ``maxEntries``: a finished build's record is deleted
    #: once it is both older than this and beyond the newest this many (pinned ones stay)
    history_max_age: int = 48 * 3600
    history_max_entries: int = 50
    #: ``[dns]``: ``nameservers``, ``options``, ``searchDomains`` for containers' resolv.conf
    #: (each replaces the host's when set); None without a ``[dns]`` table
    dns: dict[str, list[str]] | None = None
    #: the worker that runs steps: ``oci`` (``[worker.oci]``) or ``containerd``
    worker_name: str = "oci"
    #: every ``[worker.*]`` section as written (``worker`` is the chosen one's)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def enabled_workers(self) -> list[str]:
        """The enabled workers, as ``ListWorkers`` gives them: the chosen one (the default,
        which runs builds) first, then the others in BuildKit's order (OCI, containerd). A
        section without ``enabled`` counts as BuildKit's ``auto``."""
        names = [self.worker_name] if self.worker.get("enabled", True) is not False else []
        for name in ("oci", "containerd"):
            section = self.workers.get(name)
            if name == self.worker_name or section is None:
                continue
            if section.get("enabled", True) is not False:
                names.append(name)
        return names

    def use_worker(self, name: str, **settings: Any) -> None:
        """Run steps with worker ``name`` (its section, with ``settings`` over it): what
        llbkitd's ``--oci-worker``/``--containerd-worker`` flags choose over the file."""
        section = {**self.workers.get(name, {}), **settings}
        self.workers[name] = section
        self.worker_name = name
        self.worker = dict(section)


@dataclass
class GrpcConfig:
    """``[grpc]`` of ``buildkitd.toml``, for llbkitd."""

    address: list[str] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


def _check(table: dict[str, Any], known: set[str], prefix: str, source: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {prefix}{key} (known: {', '.join(sorted(known))})"
            )


# What BuildKit v0.11.6 reads from a [registry."host"] table, and the TOML type of each.
_REGISTRY_LISTS = {"mirrors", "ca", "tlsconfigdir"}
_REGISTRY_BOOLS = {"http", "insecure"}


def _read_registry(data: dict[str, Any], source: str) -> dict[str, Any]:
    registry = data.get("registry", {})
    if not isinstance(registry, dict) or not all(isinstance(v, dict) for v in registry.values()):
        raise ConfigError(f'{source}: registry must be tables like [registry."host"]')
    for host, table in registry.items():
        _check_registry(table, f'{source}: registry."{host}"')
    return registry


def _check_registry(table: dict[str, Any], where: str) -> None:
    _check(table, _REGISTRY_LISTS | _REGISTRY_BOOLS | {"keypair"}, "", where)
    for key in _REGISTRY_LISTS & table.keys():
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}: {key} must be a list of strings, e.g. {key} = ["…"]')
    for key in _REGISTRY_BOOLS & table.keys():
        if not isinstance(table[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    pairs = table.get("keypair", [])
    if not isinstance(pairs, list) or not all(
        isinstance(p, dict)
        and set(p) <= {"key", "cert"}
        and all(isinstance(v, str) for v in p.values())
        for p in pairs
    ):
        raise ConfigError(
            f'{where}: keypair must be tables like [[registry."host".keypair]] with key and cert'
        )


def _check_platforms(oci: dict[str, Any], source: str, worker: str = "oci") -> None:
    platforms = oci.get("platforms", [])
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
        raise ConfigError(f"{source}: worker.{worker}.platforms must be a list of strings")
    for text in platforms:
        problem = platform_problem(text)
        if problem:
            raise ConfigError(f"{source}: worker.{worker}.platforms: {problem}")


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a file to read

    try:
        return tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not TOML: byte {err.start} is not UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise ConfigError(f"{path}: not TOML that can be read: values nested too deeply") from None


def load_config(path: Path | None) -> EngineConfig:
    """Read a ``buildkitd.toml``; ``None`` gives the defaults."""
    if path is None:
        return EngineConfig()
    source = str(path)
    data = _read_toml(path)
    _check(data, _TOP, "", source)
    config = EngineConfig(source=source)
    for read in (_read_root, _read_grpc, _read_history, _read_entitlements, _read_dns):
        read(data, config)
    config.registry = _read_registry(data, source)
    workers = data.get("worker", {})
    if not isinstance(workers, dict):
        raise ConfigError(f"{source}: worker must be a table")
    _check(workers, {"oci", "containerd"}, "worker.", source)
    for name, table in workers.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: worker.{name} must be a table")
        _check(table, _WORKER_KEYS[name], f"worker.{name}.", source)
    config.workers = {name: dict(table) for name, table in workers.items()}
    config.worker_name = _chosen_worker(workers, source)
    # The engine's own keys (gc, gcpolicy, max-parallelism) are read from the chosen worker's.
    oci = workers.get(config.worker_name, {})
    config.worker = dict(oci)
    gc = oci.get("gc", True)
    if not isinstance(gc, bool):  # BuildKit's TOML reads a bool or refuses the file
        raise ConfigError(f"{source}: worker.{config.worker_name}.gc must be true or false")
    config.gc = gc
    try:
        if "gckeepstorage" in oci:
            where = f"{source}: worker.{config.worker_name}.gckeepstorage"
            config.gc_keep_storage = parse_bytes(oci["gckeepstorage"], where)
        if "max-parallelism" in oci:
            value = oci["max-parallelism"]
            # 0 is BuildKit's "no limit"; a string, a fraction or a bool is a mistake.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError
            config.max_parallelism = value
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: worker.{config.worker_name}.max-parallelism must be a whole number "
            "(0: no limit)"
        ) from None
    _check_platforms(oci, source, config.worker_name)
    if config.worker_name == "oci" and oci.get("noProcessSandbox", False) is not False:
        raise ConfigError(  # BuildKit's rule, and llbkit has no rootless mode
            f"{source}: worker.oci.noProcessSandbox: can't enable NoProcessSandbox without "
            "Rootless (llbkit has no rootless mode in this release)"
        )
    unused = _flatten(data) - _USED - {"root"}
    if not isinstance(oci.get("gcpolicy", []), list):
        raise ConfigError(
            f"{source}: worker.oci.gcpolicy must be tables like [[worker.oci.gcpolicy]]"
        )
    for n, rule in enumerate(oci.get("gcpolicy", [])):
        where = f"{source}: worker.{config.worker_name}.gcpolicy[{n}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{where} must be a table")
        _check(rule, _RULE, f"worker.{config.worker_name}.gcpolicy[{n}].", source)
        unused |= {
            f"worker.{config.worker_name}.gcpolicy.{key}" for key in _RULE_UNUSED & rule.keys()
        }
        filters = rule.get("filters", [])
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise ConfigError(f"{where}.filters must be a list of strings")
        config.gc_rules.append(
            GCRule(
                all=bool(rule.get("all", False)),
                keep_bytes=parse_bytes(rule.get("keepBytes", 0), f"{where}.keepBytes"),
                keep_duration=parse_duration(rule.get("keepDuration", 0), f"{where}.keepDuration"),
                filters=tuple(filters),
            )
        )
    config.unused = sorted(unused)
    return config


def _read_root(data: dict[str, Any], config: EngineConfig) -> None:
    """``[llbkit] root``; BuildKit's ``root`` is its own state directory, never llbkit's."""
    source = config.source
    if "root" in data:
        config.warnings.append(
            f"{source}: root = {data['root']!r} is BuildKit's state directory and is not used "
            "by llbkit; set [llbkit] root, --root or LLBKIT_ROOT for llbkit's own"
        )
    own = data.get("llbkit", {})
    if not isinstance(own, dict):
        raise ConfigError(f"{source}: llbkit must be a table")
    _check(own, {"root", "max-layer-entries", "max-layer-size"}, "llbkit.", source)
    if "root" in own:
        if not isinstance(own["root"], str) or not own["root"]:
            raise ConfigError(f"{source}: llbkit.root must be a directory's path (a string)")
        config.root = Path(own["root"])
    if "max-layer-entries" in own:
        entries = own["max-layer-entries"]
        if not isinstance(entries, int) or isinstance(entries, bool) or entries < 1:
            raise ConfigError(
                f"{source}: llbkit.max-layer-entries = {entries!r} is not a positive whole number"
            )
        config.max_layer_entries = entries
    if "max-layer-size" in own:
        size = parse_bytes(own["max-layer-size"], f"{source}: llbkit.max-layer-size")
        if size < 1:
            raise ConfigError(f"{source}: llbkit.max-layer-size must be more than 0 bytes")
        config.max_layer_size = size


def _chosen_worker(workers: dict[str, Any], source: str) -> str:
    """BuildKit's choice: the OCI worker unless it is disabled, then the containerd worker
    unless that is disabled too."""
    enabled = {
        name: workers.get(name, {}).get("enabled", name == "oci" or name in workers)
        for name in ("oci", "containerd")
    }
    for name, value in enabled.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: worker.{name}.enabled must be true or false")
    if enabled["oci"]:
        return "oci"
    if enabled["containerd"]:
        return "containerd"
    return "oci"  # both disabled: the engine says so when a step needs a worker


def _read_entitlements(data: dict[str, Any], config: EngineConfig) -> None:
    entitlements = data.get("insecure-entitlements", [])
    if not isinstance(entitlements, list) or not set(entitlements) <= set(ENTITLEMENTS):
        raise ConfigError(
            f"{config.source}: insecure-entitlements must list network.host and/or "
            "security.insecure"
        )
    config.insecure_entitlements = [str(e) for e in entitlements]


def _read_history(data: dict[str, Any], config: EngineConfig) -> None:
    """``[history]``: how long and how many finished builds' records are kept."""
    table = data.get("history", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{config.source}: history must be a table")
    _check(table, {"maxAge", "maxEntries"}, "history.", config.source)
    for key, attr in (("maxAge", "history_max_age"), ("maxEntries", "history_max_entries")):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{config.source}: history.{key} must be a whole number >= 0")
            setattr(config, attr, value)


def _read_dns(data: dict[str, Any], config: EngineConfig) -> None:
    """``[dns]``: what containers' ``/etc/resolv.conf`` says instead of the host's."""
    if "dns" not in data:
        return
    table = data["dns"]
    if not isinstance(table, dict):
        raise ConfigError(f"{config.source}: dns must be a table")
    _check(table, {"nameservers", "options", "searchDomains"}, "dns.", config.source)
    for key, value in table.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{config.source}: dns.{key} must be a list of strings, e.g. ["…"]')
    config.dns = {key: list(value) for key, value in table.items()}


def _read_grpc(data: dict[str, Any], config: EngineConfig) -> None:
    """``[grpc]`` and ``debug``: what llbkitd reads of the file."""
    source = config.source
    if "debug" in data:
        if not isinstance(data["debug"], bool):
            raise ConfigError(f"{source}: debug must be true or false")
        config.debug = data["debug"]
    table = data.get("grpc", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: grpc must be a table")
    _check(table, _GRPC, "grpc.", source)
    address = table.get("address", [])
    if isinstance(address, str):
        address = [address]
    if not isinstance(address, list) or not all(isinstance(a, str) and a for a in address):
        raise ConfigError(f'{source}: grpc.address must be a list of addresses ("unix://...")')
    config.grpc.address = list(address)
    for key in ("uid", "gid"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{source}: grpc.{key} must be a number (a user or group id)")
            setattr(config.grpc, key, value)
    tls = table.get("tls", {})
    if not isinstance(tls, dict):
        raise ConfigError(f"{source}: grpc.tls must be a table")
    _check(tls, _TLS, "grpc.tls.", source)
    for key in _TLS:
        value = tls.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{source}: grpc.tls.{key} must be a file name")
        setattr(config.grpc, f"tls_{key}", value)


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        name = prefix + key
        if isinstance(value, dict) and name.count(".") < 2 and name not in ("registry",):
            keys |= _flatten(value, name + ".")
        elif name.startswith(("worker.oci.gcpolicy", "worker.containerd.gcpolicy")):
            keys.add(name.rsplit(".gcpolicy", 1)[0] + ".gcpolicy")
        else:
            keys.add(name)
    return keys


def default_gc_rules(keep_storage: int, root: Path) -> list[GCRule]:
    """BuildKit's default policy for a store of ``keep_storage`` bytes (0: 10 % of the disk)."""
    cap = keep_storage
    if cap == 0:
        try:
            st = os.statvfs(root)
            # As BuildKit: a tenth of the disk in whole GiB, plus one, counted in GB.
            tenth = st.f_blocks * st.f_frsize // 10
            cap = (tenth // 2**30 + 1) * 10**9
        except OSError:
            cap = 2 * 10**9
    return [
        GCRule(
            filters=("type==source.local,type==exec.cachemount,type==source.git.checkout",),
            keep_duration=48 * 3600,
            keep_bytes=512 * 10**6,
        ),
        GCRule(keep_duration=60 * 86400, keep_bytes=cap),
        GCRule(keep_bytes=cap),
        GCRule(all=True, keep_bytes=cap),
    ]
