"""``State``: an immutable point in a build graph plus the settings later ops inherit.

Like the Go client's ``llb.State``: every method returns a new state; environment, working
directory, user, network and platform carry over into the ops created from it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from llbkit.core.llb import digest_of, marshal, pb
from llbkit.sdk.llb._vertex import Marshaler, Options, Output

if TYPE_CHECKING:
    from llbkit.core.plugins.context import Platform
    from llbkit.sdk.llb.exec import ExecState, Mount
    from llbkit.sdk.llb.file import FileAction

__all__ = ["Definition", "NetworkMode", "SecurityMode", "State"]

NetworkMode = Literal["sandbox", "host", "none"]
SecurityMode = Literal["sandbox", "insecure"]


@dataclass(frozen=True)
class Definition:
    """A marshaled graph: op bytes in dependency order, the terminal op last, metadata by digest."""

    ops: tuple[bytes, ...]
    metadata: dict[str, pb.OpMetadata]
    locations: dict[str, list[pb.Location]]

    def to_pb(self) -> pb.Definition:
        """As a ``pb.Definition`` message."""
        definition = pb.Definition()
        getattr(definition, "def").extend(self.ops)
        for digest, meta in self.metadata.items():
            definition.metadata[digest].CopyFrom(meta)
        definition.Source.SetInParent()
        for digest, locations in self.locations.items():
            definition.Source.locations[digest].locations.extend(locations)
        return definition

    def to_bytes(self) -> bytes:
        """The bytes BuildKit's ``llb.WriteTo`` writes for the same graph."""
        return marshal(self.to_pb())


@dataclass(frozen=True)
class State:
    """A filesystem state (or scratch) and the process settings that go with it."""

    output: Output | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    network: NetworkMode = "sandbox"
    security: SecurityMode = "sandbox"
    extra_hosts: tuple[tuple[str, str], ...] = ()
    ulimits: tuple[tuple[str, int, int], ...] = ()
    cgroup_parent: str = ""
    platform: Platform | None = None

    # -- settings carried into later ops ---------------------------------------------------------

    def with_env(self, key: str, value: str) -> State:
        """Set ``key`` (replacing an earlier value, which moves it last, as Go's client does)."""
        kept = tuple((k, v) for k, v in self.env if k != key)
        return replace(self, env=(*kept, (key, value)))

    def without_env(self, key: str) -> State:
        """Remove ``key`` from the environment."""
        return replace(self, env=tuple((k, v) for k, v in self.env if k != key))

    def get_env(self, key: str) -> str | None:
        """The value of ``key``, or ``None``."""
        return next((v for k, v in self.env if k == key), None)

    def with_dir(self, path: str) -> State:
        """Set the working directory; a relative path is joined to the current one."""
        return replace(self, cwd=posixpath.join(self.cwd or "/", path))

    def with_user(self, user: str) -> State:
        """Run later processes as ``user`` (a name, ``uid`` or ``uid:gid``)."""
        return replace(self, user=user)

    def with_hostname(self, hostname: str) -> State:
        """Hostname of later processes."""
        return replace(self, hostname=hostname)

    def with_network(self, mode: NetworkMode) -> State:
        """Network mode of later processes: ``sandbox``, ``host`` or ``none``."""
        return replace(self, network=mode)

    def with_security(self, mode: SecurityMode) -> State:
        """Security mode of later processes: ``sandbox`` or ``insecure``."""
        return replace(self, security=mode)

    def with_extra_host(self, host: str, ip: str) -> State:
        """Add a ``/etc/hosts`` entry for later processes."""
        return replace(self, extra_hosts=(*self.extra_hosts, (host, ip)))

    def with_ulimit(self, name: str, soft: int, hard: int) -> State:
        """Add a resource limit (``nofile``...) for later processes."""
        return replace(self, ulimits=(*self.ulimits, (name, soft, hard)))

    def with_cgroup_parent(self, parent: str) -> State:
        """Run later processes under this cgroup parent."""
        return replace(self, cgroup_parent=parent)

    def with_platform(self, platform: Platform) -> State:
        """The platform later ops are built for."""
        return replace(self, platform=platform)

    # -- new ops -----------------------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str] | str | None = None,
        *,
        shell: str | None = None,
        mounts: Sequence[Mount] = (),
        readonly_rootfs: bool = False,
        proxy_env: pb.ProxyEnv | None = None,
        **options: object,
    ) -> ExecState:
        """Run a process on this state. ``args`` is a list, or a string split as a shell would;
        ``shell="cmd"`` runs ``/bin/sh -c cmd``. Options of :class:`Options` (``custom_name``,
        ``ignore_cache``...) and state settings (``env``, ``cwd``, ``user``, ``network``,
        ``security``, ``hostname``, ``extra_hosts``) apply to this op only."""
        from llbkit.sdk.llb.exec import run

        return run(
            self,
            args=args,
            shell=shell,
            mounts=mounts,
            readonly_rootfs=readonly_rootfs,
            proxy_env=proxy_env,
            options=options,
        )

    def file(self, action: FileAction, **options: object) -> State:
        """Apply a chain of file actions (``mkdir``, ``mkfile``, ``rm``, ``copy``)."""
        from llbkit.sdk.llb.file import FileOp

        opts = Options(**options)  # type: ignore[arg-type]
        op = FileOp(action.bind(self), opts, self.platform)
        return replace(self, output=Output(op, 0))

    # -- output --------------------------------------------------------------------------------

    def marshal(self, platform: Platform | None = None) -> Definition:
        """Marshal the graph leading to this state, as ``State.Marshal`` does in Go."""
        m = Marshaler(platform)
        if self.output is None:
            return Definition((), {}, {})
        result = m.input(self.output)
        terminal = pb.Op(inputs=[result])
        data = marshal(terminal)
        digest = digest_of(data)
        meta = pb.OpMetadata()
        meta.caps["constraints"] = True
        meta.caps["platform"] = True
        for other in m.metadata.values():
            if other.ignore_cache:
                meta.caps["meta.ignorecache"] = True
            if other.description:
                meta.caps["meta.description"] = True
            if other.HasField("export_cache"):
                meta.caps["meta.exportcache"] = True
        ops = [*m.ops, data]
        m.metadata[digest] = meta
        return Definition(tuple(ops), m.metadata, m.locations)
