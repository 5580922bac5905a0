"""Running an ExecOp: its mounts prepared on the store, its process handed to the worker.

The root and every other writable mount become work trees over their input's chain; those with
an output are committed as new layers afterwards, the others discarded. Read-only binds are
views. Cache mounts are directories kept across builds; tmpfs is the worker's; secrets are
written to a private tmpfs directory outside the store, so they never reach a layer, a key or the
state root.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from llbkit.core.cache.root import record_outside
from llbkit.core.cache.store import Chain, Store, WorkTree
from llbkit.core.errors import UserError
from llbkit.core.fs.iterative import rmtree
from llbkit.core.fs.rootpath import resolve_in_root
from llbkit.core.llb import pb
from llbkit.core.llb.marshal import marshal
from llbkit.core.plugins.context import ClientIO
from llbkit.core.plugins.worker import Executor, MountSpec, ProcessSpec
from llbkit.core.snapshot.layers import apply_layer
from llbkit.core.solver.keys import sha
from llbkit.core.solver.ops.base import Op, OpContext

__all__ = ["CacheMounts", "ExecFailed", "ExecOp", "run_exec"]

_NETWORK = {0: "sandbox", 1: "host", 2: "none"}
#: what the runtime mounts in every container (their mount points are stubs if missing)
#: files the runtime binds into every container; their stubs go, as BuildKit's do (the
#: /proc, /dev and /sys mount points it creates stay, as they do with BuildKit)
_RUNTIME_MOUNTS = ("/etc/hosts", "/etc/resolv.conf")


class ExecFailed(UserError):
    """The process ran and exited non-zero."""


class CacheMounts:
    """``--mount=type=cache`` directories by id, kept across builds under ``<root>/cachemounts``.

    ``shared``: one directory for every user at once; ``private``: another directory when the
    first is busy; ``locked``: users take turns.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.base = store.root.path / "cachemounts"
        self._locks: dict[str, anyio.Lock] = {}
        self._busy: dict[Path, int] = {}

    def _dir(self, cache_id: str, n: int = 0) -> Path:
        import hashlib

        name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
        return self.base / (name if n == 0 else f"{name}-{n}")

    @asynccontextmanager
    async def mount(
        self,
        cache_id: str,
        sharing: int,
        seed: Callable[[Path], None] | None,
        *,
        source: Chain = (),
    ) -> AsyncIterator[Path]:
        """The directory of ``cache_id`` started from ``source`` (the mount's input): a cache
        with an input is another cache than the same id with none or another input, as
        BuildKit keys one by its id and its input's ref."""
        key = f"{cache_id}:{','.join(map(str, source))}" if source else cache_id
        if sharing == pb.CacheSharingOpt.LOCKED:
            lock = self._locks.setdefault(key, anyio.Lock())
            async with lock:
                yield self._prepare(self._dir(key), cache_id, seed)
            return
        path = self._dir(key)
        if sharing == pb.CacheSharingOpt.PRIVATE:
            n = 0
            while self._busy.get(path):
                n += 1
                path = self._dir(key, n)
        self._busy[path] = self._busy.get(path, 0) + 1
        try:
            yield self._prepare(path, cache_id, seed)
        finally:
            self._busy[path] -= 1

    def _prepare(self, path: Path, cache_id: str, seed: Callable[[Path], None] | None) -> Path:
        if not path.exists():
            self.base.mkdir(exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.store.tmp))
            staging.chmod(0o755)
            if seed is not None:
                seed(staging)
            (staging.parent / f"{staging.name}.id").write_text(cache_id)
            os.rename(staging, path)
            os.rename(staging.parent / f"{staging.name}.id", path.with_suffix(".id"))
        return path


def _joined(cwd: str, dest: str) -> str:
    return posixpath.normpath(posixpath.join("/", cwd or "/", dest))


def _selected(path: Path, selector: str) -> Path:
    return resolve_in_root(path, selector) if selector else path


def _stubs(rootfs: Path, dests: Sequence[str], recursive: bool) -> list[Path]:
    """Mount points missing from the rootfs (the runtime will create them), each followed by
    its missing parents when ``recursive`` (the LLB's ``removeMountStubsRecursive``, which
    BuildKit's LLB client always sets): the order they are removed in, innermost first."""
    missing: list[Path] = []
    for dest in dests:
        path = resolve_in_root(rootfs, dest, follow_last=False)
        while path != rootfs and path.is_relative_to(rootfs) and not os.path.lexists(path):
            missing.append(path)
            if not recursive:
                break
            path = path.parent
    return missing


def _remove_stubs(stubs: Sequence[Path]) -> None:
    """Remove what the runtime created for a mount point and left empty: an empty directory
    or an empty file the rootfs did not have before the run (none of what was there)."""
    for path in stubs:
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif os.path.lexists(path) and path.lstat().st_size == 0:
                path.unlink()
        except OSError:
            continue


@dataclass
class _Mounts:
    rootfs: Path | None = None
    specs: list[MountSpec] = field(default_factory=list)
    outputs: dict[int, WorkTree] = field(default_factory=dict)


async def _prepare(
    store: Store,
    exe: pb.ExecOp,
    chains: Sequence[Chain],
    name: str,
    *,
    stack: AsyncExitStack,
    client: ClientIO,
    cache_mounts: CacheMounts,
) -> _Mounts:
    """Materialise every mount of ``exe``; what the stack closes is released afterwards."""
    found = _Mounts()
    threads = anyio.to_thread.run_sync
    for mount in exe.mounts:
        kind = mount.mountType
        # A relative destination is the process's working directory's, as runc takes one.
        dest = mount.dest if mount.dest.startswith("/") else _joined(exe.meta.cwd, mount.dest)
        # Only bind and cache mounts read an input; BuildKit's client leaves a secret's or an
        # SSH socket's at 0, which names no input when the step has none (FROM scratch).
        reads = kind in (pb.MountType.BIND, pb.MountType.CACHE) and mount.input >= 0
        chain = chains[mount.input] if reads else ()
        if kind == pb.MountType.BIND and (mount.dest == "/" or not mount.readonly):
            # What the layer is, as BuildKit describes an exec's output (du, image history).
            described = f"mount {mount.dest} from exec {' '.join(exe.meta.args)}"
            tree = await threads(store.work_tree, chain, described)
            stack.callback(tree.close)
            if mount.output >= 0:
                found.outputs[mount.output] = tree
            if mount.dest == "/":
                found.rootfs = tree.path
            else:
                found.specs.append(MountSpec(dest, "bind", _selected(tree.path, mount.selector)))
        elif kind == pb.MountType.BIND:
            view = stack.enter_context(store.view(chain))
            found.specs.append(
                MountSpec(dest, "bind", _selected(view, mount.selector), readonly=True)
            )
        elif kind == pb.MountType.CACHE:
            path = await stack.enter_async_context(
                cache_mounts.mount(
                    mount.cacheOpt.ID or mount.dest,
                    mount.cacheOpt.sharing,
                    _seed(store, chain),
                    source=chain,
                )
            )
            # A selector mounts a subdirectory of the cache (one its source made, e.g. with
            # the mode and owner a Dockerfile's cache mount asks for).
            path = _selected(path, mount.selector)
            found.specs.append(MountSpec(dest, "bind", path, readonly=mount.readonly))
        elif kind == pb.MountType.TMPFS:
            size = mount.TmpfsOpt.size if mount.HasField("TmpfsOpt") else 0
            options = {"size": str(size)} if size > 0 else {}
            found.specs.append(MountSpec(dest, "tmpfs", options=options, readonly=mount.readonly))
        elif kind == pb.MountType.SECRET:
            secret = await _secret(client, mount, stack, store.tmp)
            if secret is not None:
                found.specs.append(MountSpec(dest, "secret", secret, readonly=True))
        elif kind == pb.MountType.SSH:
            sock = await _ssh(client, mount, stack, store.tmp)
            if sock is not None:
                found.specs.append(MountSpec(dest, "ssh", sock))
    return found


def _seed(store: Store, chain: Chain) -> Callable[[Path], None] | None:
    """A new cache mount's first content: its input's tree, if it has one."""
    if not chain:
        return None

    def seed(target: Path) -> None:
        with store.view(chain) as view:
            apply_layer(view, target, "plain")

    return seed


def _process(
    exe: pb.ExecOp,
    network: str,
    secret_env: Sequence[str],
    *,
    uid: int,
    gid: int,
    groups: Sequence[int],
) -> ProcessSpec:
    meta = exe.meta
    return ProcessSpec(
        args=list(meta.args),
        env=[*meta.env, *_proxy_list(meta.proxy_env), *secret_env],
        cwd=meta.cwd or "/",
        user=meta.user,
        uid=uid,
        gid=gid,
        additional_gids=tuple(groups),
        hostname=meta.hostname or "buildkitsandbox",
        network=network,  # type: ignore[arg-type]
        security="insecure" if exe.security == pb.SecurityMode.INSECURE else "sandbox",
        extra_hosts=[(h.Host, h.IP) for h in meta.extraHosts],
        ulimits=[(u.Name, u.Soft, u.Hard) for u in meta.ulimit],
        cgroup_parent=meta.cgroupParent,
        readonly_rootfs=any(m.dest == "/" and m.readonly for m in exe.mounts),
    )


class ExecOp(Op):
    kind = "exec"

    def default_name(self, names: Mapping[str, str]) -> str:
        return " ".join(self.op.exec.meta.args)

    def definition_digest(self) -> str:
        """As BuildKit: without mount selectors, extra-host addresses and proxy variables."""
        norm = pb.Op()
        norm.CopyFrom(self.op)
        del norm.inputs[:]
        for mount in norm.exec.mounts:
            mount.selector = ""
        for host in norm.exec.meta.extraHosts:
            host.IP = ""
        norm.exec.meta.ClearField("proxy_env")
        return sha(marshal(norm))

    async def run(self, ctx: OpContext, inputs: Sequence[Chain]) -> list[Chain]:
        executor = await ctx.drivers.executor()
        return await run_exec(self.op, inputs, ctx, executor)


async def run_exec(
    op: pb.Op, chains: Sequence[Chain], ctx: OpContext, executor: Executor
) -> list[Chain]:
    """Run ``op.exec`` and return the chains of its outputs, in output order."""
    exe = op.exec
    store, client, name = ctx.store, ctx.client, ctx.name
    network = _NETWORK.get(exe.network, "sandbox")  # granted: the solver checked at load
    secret_env = []
    for env in exe.secretenv:
        value = await _secret_value(client, env.ID, env.optional)
        if value is not None:
            secret_env.append(f"{env.name}={value.decode('utf-8', 'replace')}")
    async with AsyncExitStack() as stack:
        mounts = await _prepare(
            store, exe, chains, name, stack=stack, client=client, cache_mounts=ctx.cache_mounts()
        )
        rootfs = mounts.rootfs
        if rootfs is None:
            raise UserError("exec op has no root mount")
        dests = [*_RUNTIME_MOUNTS, *(m.dest for m in mounts.specs)]
        stubs = _stubs(rootfs, dests, exe.meta.removeMountStubsRecursive)
        shown = " ".join(exe.meta.args)
        from llbkit.core.ops.users import resolve_user  # not imported by a cached build

        try:
            uid, gid, groups = resolve_user(rootfs, exe.meta.user)
            _make_cwd(rootfs, exe.meta.cwd or "/", uid, gid)
        except UserError as err:
            # BuildKit finds out when starting the process, and says so in its terms.
            raise ExecFailed(
                f"process {_go_quote(shown)} did not complete successfully: {err}"
            ) from None
        process = _process(exe, network, secret_env, uid=uid, gid=gid, groups=groups)
        code = await executor.run(os.urandom(12).hex(), process, rootfs, mounts.specs, ctx.progress)
        await anyio.to_thread.run_sync(_remove_stubs, stubs)
        if code != 0:
            raise ExecFailed(
                f"process {_go_quote(shown)} did not complete successfully: exit code: {code}"
            )
        return [
            await anyio.to_thread.run_sync(mounts.outputs[n].commit) for n in sorted(mounts.outputs)
        ]
    raise AssertionError("unreachable")


def _make_cwd(rootfs: Path, cwd: str, uid: int, gid: int) -> None:
    """Create the working directory if missing, owned by the process's user (as BuildKit)."""
    path = resolve_in_root(rootfs, cwd)
    missing = []
    while not path.exists() and path != rootfs:
        missing.append(path)
        path = path.parent
    for created in reversed(missing):
        created.mkdir(mode=0o755)
        os.chown(created, uid, gid)


async def _secret_value(client: ClientIO, secret_id: str, optional: bool) -> bytes | None:
    try:
        return await client.secret(secret_id)
    except (UserError, KeyError):
        if optional:
            return None
        raise UserError(
            f"secret {secret_id}: not found (pass --secret id={secret_id},src=…)"
        ) from None


async def _secret(
    client: ClientIO, mount: pb.Mount, stack: AsyncExitStack, tmp: Path
) -> Path | None:
    opt = mount.secretOpt
    data = await _secret_value(client, opt.ID, opt.optional)
    if data is None:
        return None
    # A private directory on tmpfs: the value never touches the disk or the state root.
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    holder = Path(tempfile.mkdtemp(dir=base, prefix="llbkit-secret-"))
    # Recorded in the state root before the value is written: a killed build's is removed.
    record = record_outside(tmp, holder)
    stack.callback(record.unlink, missing_ok=True)
    stack.callback(rmtree, holder, True)
    path = holder / "secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, opt.mode & 0o7777 if opt.mode else 0o400)
    if os.geteuid() == 0:
        os.chown(path, opt.uid, opt.gid)
    return path


async def _ssh(client: ClientIO, mount: pb.Mount, stack: AsyncExitStack, tmp: Path) -> Path | None:
    """The step's own socket to the client's agent, with the owner and mode the mount asks
    for (BuildKit's: 0600, root's, by default), so another user than root can reach it."""
    opt = mount.SSHOpt
    try:
        agent = Path(await client.ssh_agent(opt.ID))
    except UserError:
        if opt.optional:
            return None
        raise
    return await stack.enter_async_context(
        _agent_proxy(agent, tmp, opt.uid, opt.gid, opt.mode & 0o7777 or 0o600)
    )


@asynccontextmanager
async def _agent_proxy(
    agent: Path, tmp: Path, uid: int, gid: int, mode: int
) -> AsyncIterator[Path]:
    """A socket whose every connection is spliced to ``agent``, for one step: in a short
    folder outside the state root (a socket's path is at most 107 bytes), recorded there so
    that a killed build's is removed."""
    import socket

    from llbkit.core.session.relay import relay_listener

    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())
    holder = Path(tempfile.mkdtemp(dir=base, prefix="llbkit-ssh-"))
    record = record_outside(tmp, holder)
    path = holder / "agent.sock"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(str(path))
        listening.listen()
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        server = await relay_listener(listening, str(agent))
        try:
            yield path
        finally:
            server.close()
    finally:
        listening.close()
        rmtree(holder, True)
        record.unlink(missing_ok=True)


def _go_quote(text: str) -> str:
    """Go's ``%q``, as BuildKit quotes a command in its error (inner quotes escaped)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def _proxy_list(proxies: pb.ProxyEnv) -> list[str]:
    """An op's proxies as the process's environment, each in both cases, as BuildKit sets them."""
    found = []
    for name, value in (
        ("http_proxy", proxies.http_proxy),
        ("https_proxy", proxies.https_proxy),
        ("ftp_proxy", proxies.ftp_proxy),
        ("no_proxy", proxies.no_proxy),
        ("all_proxy", proxies.all_proxy),
    ):
        if value:
            found += [f"{name.upper()}={value}", f"{name}={value}"]
    return found
