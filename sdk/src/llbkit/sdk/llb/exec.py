"""Exec ops: a process on a root filesystem, with bind, cache, tmpfs, secret and SSH mounts."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from llbkit.core.llb import pb
from llbkit.sdk.llb._vertex import Marshaler, Options, Output, Vertex, add_caps
from llbkit.sdk.llb.state import State

__all__ = ["Bind", "Cache", "ExecState", "Mount", "SSH", "Secret", "Tmpfs"]

_NETWORK = {"sandbox": pb.UNSET, "host": pb.HOST, "none": pb.NONE}
_SECURITY = {"sandbox": pb.SANDBOX, "insecure": pb.INSECURE}
_SHARING = {"shared": pb.SHARED, "private": pb.PRIVATE, "locked": pb.LOCKED}
_STATE_SETTINGS = ("env", "cwd", "user", "hostname", "network", "security", "extra_hosts")


@dataclass(frozen=True)
class Bind:
    """Mount ``source`` (a state) at ``dest``; ``selector`` picks a subdirectory of it.

    A writable bind produces an output unless ``output=False`` (changes are then discarded).
    """

    dest: str
    source: State
    selector: str = ""
    readonly: bool = False
    output: bool = True


@dataclass(frozen=True)
class Cache:
    """A persistent cache directory kept across builds under ``id``; a new one starts as
    ``source`` (its ``selector`` subdirectory, which is what is mounted)."""

    dest: str
    id: str = ""
    sharing: Literal["shared", "private", "locked"] = "shared"
    source: State | None = None
    selector: str = ""
    readonly: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """An in-memory filesystem; ``size`` in bytes (0: no limit)."""

    dest: str
    size: int = 0
    readonly: bool = False


@dataclass(frozen=True)
class Secret:
    """A secret the client provides, as a file at ``dest`` or an environment variable ``env``."""

    id: str
    dest: str = ""
    env: str = ""
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    optional: bool = False


@dataclass(frozen=True)
class SSH:
    """An SSH agent socket forwarded from the client (default ``/run/buildkit/ssh_agent.N``)."""

    id: str = ""  # unset: the client's default agent, as Go's client leaves it
    dest: str = ""
    mode: int = 0o600
    uid: int = 0
    gid: int = 0
    optional: bool = False


Mount = Bind | Cache | Tmpfs | Secret | SSH


@dataclass(eq=False)
class ExecOp(Vertex):
    """A ``pb.ExecOp``; mounts are sorted by destination, as Go's client sorts them."""

    state: State
    args: tuple[str, ...]
    mounts: tuple[Bind | Cache | Tmpfs, ...]
    secrets: tuple[Secret, ...]
    ssh: tuple[SSH, ...]
    options: Options
    proxy_env: pb.ProxyEnv | None = None
    outputs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        index = 0
        for mount in self.mounts:
            if isinstance(mount, Bind) and mount.output and not mount.readonly:
                self.outputs[mount.dest] = index
                index += 1

    def inputs(self) -> Sequence[Output]:
        found = []
        for mount in self.mounts:
            source = mount.source if isinstance(mount, Bind | Cache) else None
            if source is not None and source.output is not None:
                found.append(source.output)
        return found

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        st = self.state
        op, meta = m.op_base(self.options, st.platform)
        exec_op = op.exec
        env = list(st.env)
        ssh_targets = [s.dest or f"/run/buildkit/ssh_agent.{i}" for i, s in enumerate(self.ssh)]
        if ssh_targets and st.get_env("SSH_AUTH_SOCK") is None:
            env.append(("SSH_AUTH_SOCK", ssh_targets[0]))
        meta_pb = exec_op.meta
        meta_pb.args.extend(self.args)
        meta_pb.env.extend(f"{k}={v}" for k, v in env)
        meta_pb.cwd = st.cwd
        meta_pb.user = st.user
        meta_pb.hostname = st.hostname
        meta_pb.cgroupParent = st.cgroup_parent
        meta_pb.removeMountStubsRecursive = True
        for host, ip in st.extra_hosts:
            meta_pb.extraHosts.add(Host=host, IP=ip)
        for name, soft, hard in st.ulimits:
            meta_pb.ulimit.add(Name=name, Soft=soft, Hard=hard)
        exec_op.network = _NETWORK[st.network]
        exec_op.security = _SECURITY[st.security]
        caps = self._caps(st)
        if self.proxy_env is not None:
            meta_pb.proxy_env.CopyFrom(self.proxy_env)
        add_caps(meta, *caps)
        self._mounts(m, op)
        return op, meta

    def _caps(self, st: State) -> list[str]:
        caps = []
        if st.ulimits:
            caps.append("exec.meta.ulimit")
        if st.cgroup_parent:
            caps.append("exec.meta.cgroup.parent")
        if st.network != "sandbox":
            caps.append("exec.meta.network")
        if st.security != "sandbox":
            caps.append("exec.meta.security")
        if self.proxy_env is not None:
            caps.append("exec.meta.proxyenv")
        caps.append("exec.meta.base")
        for mount in self.mounts:
            if isinstance(mount, Bind | Cache) and mount.selector:
                caps.append("exec.mount.selector")
            if isinstance(mount, Cache):
                caps += ["exec.mount.cache", "exec.mount.cache.sharing"]
            elif isinstance(mount, Tmpfs):
                caps.append("exec.mount.tmpfs")
                if mount.size > 0:
                    caps.append("exec.mount.tmpfs.size")
            elif mount.source.output is not None:
                caps.append("exec.mount.bind")
        if self.secrets:
            caps.append("exec.mount.secret")
            if any(s.env for s in self.secrets):
                caps.append("exec.secretenv")
        if self.ssh:
            caps.append("exec.mount.ssh")
        return caps

    def _mounts(self, m: Marshaler, op: pb.Op) -> None:
        for mount in self.mounts:
            source = mount.source if isinstance(mount, Bind | Cache) else None
            index = -1
            if source is not None and source.output is not None:
                wanted = m.input(source.output)
                found = [i for i, have in enumerate(op.inputs) if have == wanted]
                if found:
                    index = found[0]
                else:
                    op.inputs.append(wanted)
                    index = len(op.inputs) - 1
            out = op.exec.mounts.add(
                input=index, dest=mount.dest, output=self.outputs.get(mount.dest, -1)
            )
            if isinstance(mount, Bind):
                out.selector = mount.selector
                out.readonly = mount.readonly
            elif isinstance(mount, Cache):
                out.mountType = pb.CACHE
                out.selector = mount.selector
                out.cacheOpt.ID = mount.id or mount.dest
                out.cacheOpt.sharing = _SHARING[mount.sharing]
                out.readonly = mount.readonly
            else:
                out.mountType = pb.TMPFS
                out.TmpfsOpt.size = mount.size
                out.readonly = mount.readonly
        for secret in self.secrets:
            if secret.env:
                op.exec.secretenv.add(ID=secret.id, name=secret.env, optional=secret.optional)
                continue
            out = op.exec.mounts.add(
                dest=secret.dest or f"/run/secrets/{secret.id}", mountType=pb.SECRET
            )
            out.secretOpt.ID = secret.id
            out.secretOpt.uid, out.secretOpt.gid = secret.uid, secret.gid
            out.secretOpt.mode, out.secretOpt.optional = secret.mode, secret.optional
        for i, ssh in enumerate(self.ssh):
            out = op.exec.mounts.add(
                dest=ssh.dest or f"/run/buildkit/ssh_agent.{i}", mountType=pb.SSH
            )
            out.SSHOpt.ID = ssh.id
            out.SSHOpt.uid, out.SSHOpt.gid = ssh.uid, ssh.gid
            out.SSHOpt.mode, out.SSHOpt.optional = ssh.mode, ssh.optional


@dataclass(frozen=True)
class ExecState(State):
    """The state after an exec: its root filesystem, with the other writable mounts reachable."""

    exec_op: ExecOp | None = None

    def root(self) -> State:
        """The root filesystem after the process ran."""
        return self.get_mount("/")

    def get_mount(self, dest: str) -> State:
        """The state of the writable mount at ``dest`` after the process ran."""
        assert self.exec_op is not None
        if dest not in self.exec_op.outputs:
            writable = ", ".join(sorted(self.exec_op.outputs)) or "none"
            raise KeyError(f"no writable mount at {dest!r}; writable mounts: {writable}")
        base = State(**{k: getattr(self, k) for k in State.__dataclass_fields__})
        return replace(base, output=Output(self.exec_op, self.exec_op.outputs[dest]))


def run(
    state: State,
    *,
    args: Sequence[str] | str | None,
    shell: str | None,
    mounts: Sequence[Mount],
    readonly_rootfs: bool,
    proxy_env: pb.ProxyEnv | None,
    options: Mapping[str, object],
) -> ExecState:
    """Build the exec op behind :meth:`State.run`."""
    given = state  # what the settings are applied to is this op's own, as in Go's Run
    settings = {k: options[k] for k in _STATE_SETTINGS if k in options}
    op_options = {k: v for k, v in options.items() if k not in _STATE_SETTINGS}
    if "env" in settings:
        env = settings.pop("env")
        assert isinstance(env, Mapping)
        for key, value in env.items():
            state = state.with_env(str(key), str(value))
    if "cwd" in settings:
        state = state.with_dir(str(settings.pop("cwd")))
    if "extra_hosts" in settings:
        hosts = settings.pop("extra_hosts")
        assert isinstance(hosts, Mapping)
        for host, ip in hosts.items():
            state = state.with_extra_host(str(host), str(ip))
    state = replace(state, **settings)  # type: ignore[arg-type]
    if shell is not None:
        argv: tuple[str, ...] = ("/bin/sh", "-c", shell)
    elif isinstance(args, str):
        argv = tuple(shlex.split(args))
    elif args:
        argv = tuple(args)
    else:
        raise ValueError("run() needs args or shell=")
    root = Bind("/", state, readonly=readonly_rootfs)
    plain = [root, *(x for x in mounts if isinstance(x, Bind | Cache | Tmpfs))]
    ordered = tuple(sorted(plain, key=lambda x: x.dest))
    op = ExecOp(
        state=state,
        args=argv,
        mounts=ordered,
        secrets=tuple(x for x in mounts if isinstance(x, Secret)),
        ssh=tuple(x for x in mounts if isinstance(x, SSH)),
        options=Options(**op_options),  # type: ignore[arg-type]
        proxy_env=proxy_env,
    )
    output = Output(op, op.outputs["/"]) if "/" in op.outputs else None
    fields = {k: getattr(given, k) for k in State.__dataclass_fields__}
    fields["output"] = output
    return ExecState(**fields, exec_op=op)
