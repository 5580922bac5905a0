"""The solver: from a definition's terminal, compute keys, ask the caches, run only the misses.

One :class:`Solver` serves every build of an engine. A vertex is shared by digest across the
builds running at the same time: its key and its run happen once, and its progress reaches
every build that asked for it. Within a build, vertices run as soon as their inputs are ready,
under the engine's ``max-parallelism``; the first failure cancels the rest of that build.

The solver asks only lower layers: the op classes (:mod:`.ops`) run ops, the drivers give
sources and the worker, the cache chain finds results, the store keeps them. Everything a build
finds or makes is added to that build's lease as it is found.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from llbkit.core.ahead import want
from llbkit.core.cache.lazy import materialize, showing, streaming
from llbkit.core.cache.leases import Lease
from llbkit.core.cache.refs import ResultRef
from llbkit.core.cache.store import Chain, Store
from llbkit.core.drivers import Drivers
from llbkit.core.errors import BuildFailed, UserError, first_error
from llbkit.core.fs.contenthash import ContentHasher
from llbkit.core.llb import pb
from llbkit.core.llb.definition import LoadedDefinition, Vertex
from llbkit.core.plugins.context import ClientIO
from llbkit.core.plugins.lazysource import LazySourceJob
from llbkit.core.plugins.progress import (
    ProgressEvent,
    VertexLog,
    VertexStatus,
    VertexWarning,
)
from llbkit.core.plugins.progress import (
    Vertex as VertexState,
)
from llbkit.core.plugins.source import ShowsKeyWork
from llbkit.core.solver import buildkit_keys as bk
from llbkit.core.solver.cache_sources import CacheChain, Hit, LinkedSource
from llbkit.core.solver.flight import Flight
from llbkit.core.solver.keys import key_digest, result_key
from llbkit.core.solver.ops import Op, OpContext, SourceOp, op_for, ops_most_used
from llbkit.core.sources._base import MirroredJob

if TYPE_CHECKING:
    from llbkit.core.solver.ops.exec import CacheMounts

__all__ = ["BuildFailed", "GraphNode", "Solver"]

Emit = Callable[[ProgressEvent], None]
Outputs = list[tuple[str, Chain]]

#: how many combinations of its inputs' other names a resolved key is tried with
_ALTERNATIVES = 32


@dataclass(frozen=True)
class GraphNode:
    """A vertex of a finished solve as a cache export sees it.

    :param inputs: each input's vertex digest, output index and selector.
    :param key: the definition key (outputs are ``result_key(key, n)``).
    :param outputs: each output's result key and chain, when the solve got them (a vertex
        below a cache hit has none).
    :param buildkit: BuildKit's names of the vertex (:class:`~llbkit.core.solver.
        buildkit_keys.Names`); None for an op whose keys llbkit does not make as BuildKit.
    """

    digest: str
    kind: str
    inputs: tuple[tuple[str, int, str], ...]
    key: str
    outputs: tuple[tuple[str, Chain], ...] | None
    buildkit: bk.Names | None = None


@dataclass
class _Shared:
    """A vertex as all concurrent builds see it."""

    sid: str
    vertex: Vertex
    op: Op
    name: str
    key: Flight[str] = field(default_factory=Flight)
    result: Flight[Outputs] = field(default_factory=Flight)
    subscribers: list[Emit] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    history: list[ProgressEvent] = field(default_factory=list)
    users: int = 0
    started: float | None = None
    logs: list[bytes] = field(default_factory=list)

    def emit(self, event: ProgressEvent) -> None:
        self.history.append(event)
        for subscriber in list(self.subscribers):
            subscriber(event)

    def vertex_event(self, **state: Any) -> None:
        self.emit(self.vertex_state(**state))

    def vertex_state(self, **state: Any) -> VertexState:
        vertex = self.vertex
        inputs = tuple(i.digest for i in vertex.op.inputs)
        group = vertex.metadata.progress_group.id
        return VertexState(vertex.digest, self.name, inputs, progress_group=group, **state)

    def start(self) -> None:
        if self.started is None:
            self.started = time.time()
            self.vertex_event(started=self.started)

    def done(self, *, cached: bool) -> None:
        now = time.time()
        self.vertex_event(started=self.started or now, completed=now, cached=cached)

    def found(self, outputs: Outputs) -> None:
        """The vertex's results are known: every build using it holds them from now on."""
        for lease in self.leases:
            lease.add(layer for _, chain in outputs for layer in chain)


class _Sink:
    """The :class:`~llbkit.core.plugins.progress.ProgressSink` a driver reports to."""

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared

    def _send(self, event: ProgressEvent) -> None:
        self.shared.emit(event)

    def _since(self, id: str) -> float | None:
        """When the sub-task ``id`` started, as its records say."""
        return self.shared.started

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        now = time.time()
        self._send(
            VertexStatus(
                id,
                self.shared.vertex.digest,
                now,
                current=current,
                total=total,
                started=self._since(id),
                completed=now if done else None,
            )
        )

    def log(self, data: bytes, *, stream: int = 1) -> None:
        self.shared.logs.append(data)
        self._send(VertexLog(self.shared.vertex.digest, time.time(), stream, bytes(data)))

    def warn(self, message: str, *, detail: Sequence[str] = (), url: str = "") -> None:
        self._send(
            VertexWarning(self.shared.vertex.digest, time.time(), message, 1, tuple(detail), url)
        )


class _Reopened(_Sink):
    """The sink of work a finished step does later for one build (an unpulled image's blobs
    its export needs): the step shown running again, then done, as BuildKit reopens it.

    Each piece of work holds it (:meth:`hold`) until it is done (:meth:`close`): the step opens
    with the first and closes with the last, so the downloads an export runs together show as
    one reopening of the step, not one each."""

    def __init__(self, shared: _Shared, emit: Emit) -> None:
        super().__init__(shared)
        self.emit = emit
        self.began: float | None = None
        self.holders = 0
        self._first: dict[str, float] = {}

    def hold(self) -> _Reopened:
        self.holders += 1
        return self

    def _send(self, event: ProgressEvent) -> None:
        if self.began is None:
            self.began = time.time()
            self.emit(self.shared.vertex_state(started=self.began))
        self.emit(event)

    def _since(self, id: str) -> float | None:
        return self._first.setdefault(id, time.time())

    def close(self) -> None:
        self.holders -= 1
        if self.holders == 0 and self.began is not None:
            self.emit(self.shared.vertex_state(started=self.began, completed=time.time()))
            self.began = None
            self._first.clear()


class Solver:
    """Solves definitions against one store; shared by all builds of an engine."""

    def __init__(
        self, store: Store, drivers: Drivers, cache: CacheChain, max_parallelism: int = 8
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.cache = cache
        self._cache_mounts: CacheMounts | None = None
        want(*ops_most_used())  # at a wait on the network, rather than at the first step
        self.limiter = anyio.CapacityLimiter(max_parallelism)
        self.threads = anyio.CapacityLimiter(max(max_parallelism, 4) * 2)
        self._active: dict[str, _Shared] = {}
        #: by build (its lease): the vertices its solves attached to, kept until it ends
        self._held: dict[Lease, set[str]] = {}

    def _drop(self, shared: _Shared) -> None:
        shared.users -= 1
        if shared.users == 0:
            self._active.pop(shared.sid, None)
            if isinstance(shared.op, SourceOp):
                shared.op.discard()  # e.g. a download made for a key that was cached

    def _let_go(self, lease: Lease) -> None:
        """The build of ``lease`` ended: the vertices it kept go unless others use them."""
        for sid in self._held.pop(lease, ()):
            shared = self._active.get(sid)
            if shared is not None:
                self._drop(shared)

    def mounts(self) -> CacheMounts:
        """``--mount=type=cache`` directories; made when a step first mounts one."""
        if self._cache_mounts is None:
            from llbkit.core.solver.ops.exec import CacheMounts

            self._cache_mounts = CacheMounts(self.store)
        return self._cache_mounts

    async def solve(
        self,
        definition: LoadedDefinition,
        client: ClientIO,
        emit: Emit,
        lease: Lease,
        *,
        allow: Sequence[str] = (),
        cache: CacheChain | None = None,
        graph: dict[str, GraphNode] | None = None,
        lazy_images: bool = False,
        result_read: bool = True,
    ) -> ResultRef | None:
        """Build the definition's result, held by ``lease``; ``None`` when it names scratch.

        :param allow: the entitlements granted (``network.host``, ``security.insecure``).
        :param cache: where to look for results (default: the engine's own store).
        :param graph: filled with the solved vertices, by digest, for a cache export.
        :param lazy_images: the result is read only as blobs (each exporter's
            :class:`~llbkit.core.plugins.exporter.ExportsBlobs`): an image no step reads
            stays unpulled (:mod:`llbkit.core.plugins.lazysource`).
        :param result_read: something takes the result (an exporter, a cache export, the
            caller): a source that is the result and was found in the cache then shows as
            cached, else as done (resolved only), as BuildKit shows it.
        """
        order = _order(definition)
        if not order:
            return None
        _check_entitlements(order, allow)
        build = _Build(
            self,
            definition,
            client,
            emit,
            lease=lease,
            order=order,
            allow=allow,
            cache=cache or self.cache,
            lazy_images=lazy_images,
            result_read=result_read,
        )
        try:
            ref = await build.run()
            if graph is not None:
                build.describe(graph)
            return ref
        finally:
            build.detach()


def _buildkit_names(vertex: Vertex, op: Op) -> bk.Names | None:
    """BuildKit's names of ``vertex``: its records per output, its inputs' selectors and
    what their content keys read."""
    if isinstance(op, SourceOp):
        if op.is_local:
            return bk.Names(random=True)
        if not op.buildkit_keys:
            return None
        return bk.Names((tuple(bk.output_key(bk.source_digest(k), 0) for k in op.buildkit_keys),))
    cmap = _cache_map(vertex)
    if cmap is None:
        return None
    records = tuple((bk.output_key(cmap.digest, n),) for n in range(op.outputs))
    return bk.Names(records, cmap.selectors, cmap.content)


def _cache_map(vertex: Vertex) -> bk.CacheMap | None:
    """BuildKit's cache map of an exec, file, merge or diff op (None for other ops)."""
    makers = {
        "exec": bk.exec_cache_map,
        "file": bk.file_cache_map,
        "merge": bk.merge_cache_map,
        "diff": bk.diff_cache_map,
    }
    make = makers.get(vertex.kind)
    return None if make is None else make(vertex.op)


def _check_entitlements(order: Sequence[Vertex], allow: Sequence[str]) -> None:
    """Refuse a definition that asks for what the build was not granted, before anything
    runs, as BuildKit refuses it while loading the LLB."""
    from llbkit.core.llb import pb

    for vertex in order:
        if vertex.kind != "exec":
            continue
        exe = vertex.op.exec
        for wanted, needed in (
            (exe.network == pb.NetMode.HOST, "network.host"),
            (exe.security == pb.SecurityMode.INSECURE, "security.insecure"),
        ):
            if wanted and needed not in allow:
                raise UserError(f"failed to solve: failed to load LLB: {needed} is not allowed")


def _order(definition: LoadedDefinition) -> list[Vertex]:
    """The terminal's ancestors, inputs before the vertices that use them."""
    terminal = definition.terminal
    if not terminal.op.inputs:
        return []
    order: list[Vertex] = []
    seen: set[str] = set()
    stack: list[tuple[Vertex, bool]] = [(definition.by_digest[terminal.op.inputs[0].digest], False)]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if vertex.digest in seen:
            continue
        seen.add(vertex.digest)
        stack.append((vertex, True))
        for inp in reversed(vertex.op.inputs):
            if inp.digest not in seen:
                stack.append((definition.by_digest[inp.digest], False))
    return order


class _Build:
    """One solve: attaches to shared vertices, computes keys, finds hits, runs the rest."""

    def __init__(
        self,
        solver: Solver,
        definition: LoadedDefinition,
        client: ClientIO,
        emit: Emit,
        *,
        lease: Lease,
        order: list[Vertex],
        allow: Sequence[str],
        cache: CacheChain,
        lazy_images: bool = False,
        result_read: bool = True,
    ) -> None:
        self.solver = solver
        self.result_read = result_read
        self.store = solver.store
        self.definition = definition
        self.client = client
        self.emit = emit
        self.lease = lease
        self.order = order
        self.allow = list(allow)
        self.cache = cache
        self.shared: dict[str, _Shared] = {}
        self.keys: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        #: per vertex and output, the records of each imported cache BuildKit's keys reach
        self.linked: dict[str, list[dict[int, set[int]]]] = {}
        self.linked_caches: list[LinkedSource] = []
        #: BuildKit's cache maps of the build's exec and file ops, as they are needed
        self.cache_maps: dict[str, bk.CacheMap | None] = {}
        #: per vertex, per input: the record of BuildKit's content key of what it reads
        self.content_roots: dict[str, list[str | None]] = {}
        #: how many times records were found by content keys (steps on them may hit now)
        self.relinks = 0
        self.ignored: set[str] = set()
        #: sources found in the cache while their keys were computed, not yet shown as done
        self.pending: list[_Shared] = []
        #: the vertices whose output is read as files: a step's input (a merge stacks its
        #: inputs' layers, fetching what it must flatten), or any without lazy images
        self.read = {i.digest for v in order if v.kind != "merge" for i in v.op.inputs}
        if not lazy_images:
            self.read.update(vertex.digest for vertex in order)
        names: dict[str, str] = {}
        for vertex in order:
            ignore = vertex.metadata.ignore_cache
            if ignore:
                self.ignored.add(vertex.digest)
            sid = vertex.digest + ("-ignorecache" if ignore else "")
            op = op_for(vertex)
            if isinstance(op, SourceOp) and op.is_local:
                # A client's directory is that client's: never shared with another build.
                sid += f"-{id(client)}"
            names[vertex.digest] = op.name(names)
            shared = solver._active.get(sid)
            if shared is None:
                shared = solver._active[sid] = _Shared(sid, vertex, op, names[vertex.digest])
            shared.users += 1
            self._hold(shared)
            shared.subscribers.append(emit)
            shared.leases.append(lease)
            if shared.result.ok:
                shared.found(shared.result.value)
            for event in shared.history:
                emit(event)
            self.shared[vertex.digest] = shared

    def _hold(self, shared: _Shared) -> None:
        """Keep ``shared`` for the rest of the build (until its lease is released), as
        BuildKit keeps a job's vertices: a later solve of the same build (the final one after
        a frontend's own, another platform's) takes its key and result as they are, neither
        working them out again (a download, a repository's refs) nor showing the step again."""
        solver = self.solver
        held = solver._held.get(self.lease)
        if held is None:
            held = solver._held[self.lease] = set()
            lease = self.lease
            lease.when_released(lambda: solver._let_go(lease))
        if shared.sid not in held:
            held.add(shared.sid)
            shared.users += 1

    def detach(self) -> None:
        for shared in self.shared.values():
            shared.subscribers.remove(self.emit)
            shared.leases.remove(self.lease)
            self.solver._drop(shared)

    def ignore(self, vertex: Vertex) -> bool:
        return vertex.digest in self.ignored

    def describe(self, graph: dict[str, GraphNode]) -> None:
        """Add this solve's vertices (keys, inputs, results) to ``graph``."""
        for vertex in self.order:
            shared = self.shared[vertex.digest]
            sels = shared.op.selectors()
            outputs = tuple(shared.result.value) if shared.result.ok else None
            known = graph.get(vertex.digest)
            if outputs is None and known is not None:
                continue  # another platform's solve found its results: keep them
            graph[vertex.digest] = GraphNode(
                vertex.digest,
                vertex.kind,
                tuple((i.digest, i.index, sels.get(n, "")) for n, i in enumerate(vertex.op.inputs)),
                self.keys[vertex.digest],
                outputs,
                _buildkit_names(vertex, shared.op),
            )

    def _settle(self, shared: _Shared, outputs: Outputs, *, cached: bool) -> None:
        """Record a hit (or a transferred local context) unless another build was first."""
        if not shared.result.finished:
            shared.result.set(outputs)
            shared.found(outputs)
            shared.done(cached=cached)

    # -- keys -------------------------------------------------------------------------------

    async def _source_key(self, vertex: Vertex) -> str:
        shared = self.shared[vertex.digest]
        op = shared.op
        assert isinstance(op, SourceOp)

        async def compute() -> str:
            job = await op.job(self.solver.drivers)
            shared.start()
            # A job may name what computing its key does (an image: "resolve REF"), which
            # BuildKit shows as a sub-task of the vertex, on every build, cached or not.
            status = job.key_status if isinstance(job, ShowsKeyWork) else ""
            if not status:
                return await op.cache_key(self.solver.drivers, self.client)
            began = time.time()
            digest = shared.vertex.digest
            shared.emit(VertexStatus(status, digest, began, started=began))
            moved = 0
            shown = began
            ended: float | None = None  # a local context's transfer: its last count's time

            def show(n: int) -> None:
                # a local context: what crossed so far, at most each tenth of a second (as
                # BuildKit's limiter lets a transfer's progress through)
                nonlocal moved, shown, ended
                moved, ended = n, time.time()
                if ended - shown >= 0.1:
                    shown = ended
                    shared.emit(VertexStatus(status, digest, ended, current=n, started=began))

            if isinstance(job, MirroredJob):
                job.show_moved(show)
            try:
                return await op.cache_key(self.solver.drivers, self.client)
            finally:
                now = ended or time.time()
                shared.emit(
                    VertexStatus(status, digest, now, current=moved, started=began, completed=now)
                )

        return await shared.key.run(compute)

    async def _offer_blobs(self, shared: _Shared) -> None:
        """An image's layers may be left unpulled (by this build or an earlier one): while
        this build holds its results, their blobs can be fetched through its job, the fetch
        shown under the image's step."""
        op = shared.op
        assert isinstance(op, SourceOp)
        job = await op.job(self.solver.drivers)
        if not isinstance(job, LazySourceJob):
            return
        remote = await job.remote_layers()
        if not remote:
            return
        digests = [layer.digest for layer in remote]

        reopened = _Reopened(shared, self.emit)

        def shown() -> _Reopened:
            return reopened.hold()

        async def fetch(digest: str, path: Path) -> str:
            asked = showing.get()  # unpacked next, and shown with it
            sink = asked or shown()
            try:
                await job.fetch_blob(digest, path, sink, streamed=streaming.get())
            finally:
                if asked is None:
                    sink.close()
            return digest  # verified as it came

        fetchers = self.store.fetchers
        fetchers.add(digests, fetch, shown)
        self.lease.when_released(lambda: fetchers.remove(digests, fetch))

    def _key(self, vertex: Vertex) -> str:
        op = self.shared[vertex.digest].op
        sels = op.selectors()
        record = {
            "op": op.definition_digest(),
            "kind": vertex.kind,
            "inputs": [
                {"key": self.keys[i.digest], "output": i.index, "selector": sels.get(n, "")}
                for n, i in enumerate(vertex.op.inputs)
            ],
        }
        self.records[vertex.digest] = record
        return key_digest(record)

    async def _compute_keys(self) -> None:
        sources = self._nearest_first([v for v in self.order if v.kind == "source"])
        try:
            async with anyio.create_task_group() as tg:
                for vertex in sources:
                    tg.start_soon(self._guard, vertex, self._set_source_key, vertex)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        for vertex in self.order:
            if vertex.kind != "source":
                self.keys[vertex.digest] = self._key(vertex)

    def _nearest_first(self, sources: list[Vertex]) -> list[Vertex]:
        """The sources by their distance from the result, then in the order their steps name
        them: BuildKit asks its edges for keys from the result down, so a context a step reads
        starts (and is numbered) before the image under the step below it."""
        by_digest = self.definition.by_digest
        seen = {self.definition.result.digest: 0}
        queue = deque([self.definition.result.digest])
        while queue:
            vertex = by_digest.get(queue.popleft())
            for put in vertex.op.inputs if vertex is not None else ():
                if put.digest not in seen:
                    seen[put.digest] = len(seen)
                    queue.append(put.digest)
        return sorted(sources, key=lambda v: seen.get(v.digest, len(seen)))

    async def _set_source_key(self, vertex: Vertex) -> None:
        self.keys[vertex.digest] = await self._source_key(vertex)
        self.records[vertex.digest] = {"source": vertex.op.source.identifier}
        shared = self.shared[vertex.digest]
        await self._offer_blobs(shared)
        if shared.result.finished or self.ignore(vertex):
            return
        hit = await anyio.to_thread.run_sync(
            self._lookup, shared, self.keys[vertex.digest], limiter=self.solver.threads
        )
        if hit is not None and not shared.result.finished:
            # Known content. How it shows waits for :meth:`run`: as BuildKit shows it, a
            # source is cached when a step built now reads it, done when only its key was.
            shared.result.set(hit)
            shared.found(hit)
            self.pending.append(shared)

    async def _guard(self, vertex: Vertex, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn``, turning any failure into a :class:`BuildFailed` naming the vertex."""
        shared = self.shared[vertex.digest]
        try:
            await fn(*args)
        except anyio.get_cancelled_exc_class():
            if shared.started is not None and not shared.result.finished:
                shared.vertex_event(
                    started=shared.started, completed=time.time(), error="context canceled"
                )
            raise
        except BuildFailed:
            raise
        except (UserError, OSError) as err:
            raise self._failed(shared, _reason(err)) from None

    def _failed(self, shared: _Shared, reason: str) -> BuildFailed:
        shared.vertex_event(
            started=shared.started or time.time(), completed=time.time(), error=reason
        )
        return self._failure(shared, reason)

    def _failure(self, shared: _Shared, reason: str) -> BuildFailed:
        tail = b"".join(shared.logs).decode("utf-8", "replace").splitlines()[-10:]
        source = shared.vertex.metadata.description.get("llbkit.source", "")
        return BuildFailed(shared.name, reason, tail, source)

    # -- results ----------------------------------------------------------------------------

    async def run(self) -> ResultRef:
        try:
            await self._compute_keys()
        except BaseException:
            for shared in self.pending:  # found in the cache before another step failed
                shared.done(cached=True)
            raise
        self._walk_links()
        need, hits = await anyio.to_thread.run_sync(self._walk, limiter=self.solver.threads)
        if self.linked_caches and await self._link_local_reads(need):
            # Found by what they read of a client's directory: steps that need nothing below.
            need, hits = await anyio.to_thread.run_sync(self._walk, limiter=self.solver.threads)
        await self._show_unneeded(need, hits)
        try:
            async with anyio.create_task_group() as tg:
                for vertex in self.order:
                    if vertex.digest in need:
                        tg.start_soon(self._guard, vertex, self._produce, vertex)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        target = self.definition.result
        outputs = await self.shared[target.digest].result.run(self._never)
        key, chain = outputs[target.index]
        return ResultRef(self.store, key, chain)

    def _walk_links(self) -> None:
        """Find each vertex's records in the imported caches by BuildKit's keys, as its
        solver does: a source's by digest, a step's by the links from its inputs' records
        (every input must reach the record). So a cache BuildKit exported hits here."""
        caches = [c for c in self.cache.sources if isinstance(c, LinkedSource) and c.links()]
        self.linked_caches = caches
        if caches:
            self._relink(0)

    def _relink(self, start: int) -> None:
        """(Re)compute the records BuildKit's keys reach for ``self.order[start:]``."""
        caches = self.linked_caches
        for vertex in self.order[start:]:
            # Made whole, then put in place: lookups on worker threads read the map meanwhile.
            self.linked[vertex.digest] = self._reached(vertex, caches)

    def _reached(self, vertex: Vertex, caches: Sequence[LinkedSource]) -> list[dict[int, set[int]]]:
        """Per output, the records of each of ``caches`` BuildKit's keys reach for ``vertex``
        (its inputs' already known)."""
        op = self.shared[vertex.digest].op
        found: list[dict[int, set[int]]] = [{} for _ in range(op.outputs)]
        if isinstance(op, SourceOp):
            if not op.is_local:  # BuildKit's key of a client's directory is random
                roots = [bk.output_key(bk.source_digest(k), 0) for k in op.buildkit_keys]
                for n, cache in enumerate(caches):
                    nodes = set().union(*(cache.links().root(r) for r in roots))
                    if nodes:
                        found[0][n] = nodes
            return found
        if vertex.digest not in self.cache_maps:
            self.cache_maps[vertex.digest] = _cache_map(vertex)
        cmap = self.cache_maps[vertex.digest]
        if cmap is None:
            return found
        by_content = self.content_roots.get(vertex.digest, [])
        for output, reached in enumerate(found):
            target = bk.output_key(cmap.digest, output)
            for n, cache in enumerate(caches):
                graph = cache.links()
                hits: set[int] | None = graph.root(target) if not vertex.op.inputs else None
                for index, inp in enumerate(vertex.op.inputs):
                    below = self.linked.get(inp.digest, [])
                    sources = below[inp.index].get(n, set()) if inp.index < len(below) else set()
                    step = graph.linked(sources, index, target, cmap.selectors[index])
                    root = by_content[index] if index < len(by_content) else None
                    if root:  # the input named by the content the step reads of it
                        step |= graph.linked(graph.root(root), index, target, "")
                    hits = step if hits is None else hits & step
                    if not hits:
                        break
                if hits:
                    reached[n] = hits
        return found

    async def _link_local_reads(self, need: set[str]) -> bool:
        """The content keys of what the steps the build needs read of a client's directory,
        so a step found by them needs nothing below it (its image is not pulled). Whether
        any was computed."""
        linked = False
        for vertex in self.order:
            if vertex.digest not in need or vertex.kind == "source" or self.ignore(vertex):
                continue
            reads = [
                index
                for index, inp in enumerate(vertex.op.inputs)
                if self._reads_local(vertex, index, inp)
            ]
            if reads:
                chains = {i: await self._input_chain(vertex.op.inputs[i]) for i in reads}
                linked = await self._link_by_content(vertex, chains) or linked
        return linked

    async def _link_by_content(self, vertex: Vertex, chains: Mapping[int, Chain]) -> bool:
        """BuildKit knows a step on a client's directory only by the content it reads of it
        (the directory's own key is random): compute those content keys, as BuildKit's, and
        walk the links from them too. Whether any was computed."""
        cmap = self.cache_maps.get(vertex.digest)
        if cmap is None:
            return False
        roots: list[str | None] = [None] * len(vertex.op.inputs)
        for index, chain in chains.items():
            reads = cmap.content[index]
            if reads is None:
                continue
            await materialize(self.store, chain, self.solver.threads)
            found = await anyio.to_thread.run_sync(
                _content_key, self.store, chain, reads, limiter=self.solver.threads
            )
            roots[index] = None if found is None else bk.output_key(found, -1)
        if not any(roots):
            return False
        self.content_roots[vertex.digest] = roots
        self._relink(self.order.index(vertex))
        self.relinks += 1
        return True

    def _lookup_linked(self, shared: _Shared, output: int, key: str) -> Hit | None:
        """The result an imported cache holds for ``shared``'s ``output`` under BuildKit's
        key, recorded locally under ``key``."""
        found = self.linked.get(shared.vertex.digest)
        if not found:
            return None
        for n, nodes in found[output].items():
            for node in sorted(nodes):
                hit = self.linked_caches[n].lookup_node(node, key)
                if hit is not None:
                    return hit
        return None

    def _walk(self) -> tuple[set[str], dict[str, Outputs]]:
        """Down from the terminal: a hit needs nothing below it; a miss needs its inputs. On
        a thread, whole: a hop to a thread per lookup cost a cold build more than the lookups
        (results another build finishes meanwhile are found by the steps themselves)."""
        need: set[str] = set()
        hits: dict[str, Outputs] = {}
        stack = [self.definition.by_digest[self.definition.result.digest]]
        while stack:
            vertex = stack.pop()
            if vertex.digest in need or vertex.digest in hits:
                continue
            shared = self.shared[vertex.digest]
            if not shared.result.finished and not self.ignore(vertex):
                hit = self._lookup(shared, self.keys[vertex.digest])
                if hit is not None:
                    hits[vertex.digest] = hit
            if shared.result.finished or vertex.digest in hits:
                hits.setdefault(vertex.digest, [])
                continue
            need.add(vertex.digest)
            stack.extend(self.definition.by_digest[i.digest] for i in vertex.op.inputs)
        return need, hits

    async def _show_unneeded(self, need: set[str], hits: dict[str, Outputs]) -> None:
        """Show every step that does not run, inputs first, as BuildKit does on a rebuild: a
        step whose result is in the cache (below a hit too) as cached, a source read for its
        key alone (a local context transferred, an image resolved), and a step without inputs
        below a hit, as done."""
        read = {i.digest for v in self.order if v.digest in need for i in v.op.inputs}
        if self.result_read:
            read.add(self.definition.result.digest)
        pending = {shared.vertex.digest: shared for shared in self.pending}
        self.pending.clear()
        for vertex in self.order:
            shared = self.shared[vertex.digest]
            if vertex.digest in pending:
                local = isinstance(shared.op, SourceOp) and shared.op.is_local
                shared.done(cached=not local and vertex.digest in read)
                continue
            if hits.get(vertex.digest):
                self._settle(shared, hits[vertex.digest], cached=True)
                continue
            if vertex.digest in need or shared.result.finished:
                continue
            if vertex.kind == "source":
                if shared.started:
                    shared.done(cached=False)
                continue
            if self.ignore(vertex):
                continue
            hit = await anyio.to_thread.run_sync(
                self._lookup, shared, self.keys[vertex.digest], limiter=self.solver.threads
            )
            if hit is not None:
                # Shown, not taken: the build needs nothing below a hit (nor does a cache
                # export of it, nor its lease). A step without inputs (a WORKDIR on scratch)
                # is done, as BuildKit shows one: working out its key was its work.
                shared.done(cached=bool(vertex.op.inputs))

    async def _never(self) -> Outputs:
        raise AssertionError("the terminal's input was not solved")

    async def _produce(self, vertex: Vertex) -> None:
        shared = self.shared[vertex.digest]
        await shared.result.run(lambda: self._make(vertex))

    async def _input_chains(self, vertex: Vertex) -> list[Chain]:
        return [await self._input_chain(inp) for inp in vertex.op.inputs]

    async def _input_chain(self, inp: pb.Input) -> Chain:
        try:
            outputs = await self.shared[inp.digest].result.run(
                functools.partial(self._make, self.definition.by_digest[inp.digest])
            )
        except (UserError, OSError) as err:
            # The input's failure, which its own step shows: this step, which never
            # started, shows none (as BuildKit never shows a step whose input failed).
            raise self._failure(self.shared[inp.digest], _reason(err)) from None
        return outputs[inp.index][1]

    async def _linked_before_inputs(self, vertex: Vertex, key: str) -> Outputs | None:
        """An imported cache's result BuildKit's keys find for ``vertex`` before its inputs
        are made, now that steps below were found by content keys since the walk."""
        if not self.relinks:
            return None
        return await anyio.to_thread.run_sync(
            self._lookup, self.shared[vertex.digest], key, limiter=self.solver.threads
        )

    def _reads_local(self, vertex: Vertex, index: int, inp: pb.Input) -> bool:
        """Whether BuildKit keys ``vertex`` by the content it reads of its input ``index``, a
        client's directory."""
        if vertex.digest not in self.cache_maps:
            self.cache_maps[vertex.digest] = _cache_map(vertex)
        cmap = self.cache_maps[vertex.digest]
        dep = self.shared[inp.digest].op
        return (
            cmap is not None
            and index < len(cmap.content)
            and cmap.content[index] is not None
            and isinstance(dep, SourceOp)
            and dep.is_local
        )

    async def _make(self, vertex: Vertex) -> Outputs:
        shared = self.shared[vertex.digest]
        key = self.keys[vertex.digest]
        linked = self.linked_caches and vertex.kind != "source" and not self.ignore(vertex)
        relinks = self.relinks
        if linked:
            hit = await self._linked_before_inputs(vertex, key)
            if hit is not None:
                shared.found(hit)
                shared.done(cached=True)
                return hit
        chains = await self._input_chains(vertex)
        keys = [key]
        explanation = {"vertex": shared.name, **self.records[vertex.digest]}
        threads = self.solver.threads
        if vertex.kind != "source":
            # Inputs named by their results (and copied paths by their content): an input
            # that was rebuilt into the same result, or content that did not change, still hits.
            for index in shared.op.content_inputs():
                await materialize(self.store, chains[index], threads)
            resolved, explanation = await self._resolved_key(vertex, chains)
            if resolved != key:
                keys.append(resolved)
                if not self.ignore(vertex):
                    hit = await anyio.to_thread.run_sync(
                        self._lookup_resolved, shared, explanation, limiter=threads
                    )
                    if hit is not None:
                        await anyio.to_thread.run_sync(
                            self._link, key, hit, explanation, limiter=threads
                        )
                        shared.found(hit)
                        shared.done(cached=True)
                        return hit
        # Steps below found by BuildKit's content keys while the inputs were made: this
        # step's records may be known now.
        if linked and self.relinks != relinks:
            hit = await anyio.to_thread.run_sync(
                self._lookup, shared, key, limiter=self.solver.threads
            )
            if hit is not None:
                shared.found(hit)
                shared.done(cached=True)
                return hit
        if vertex.kind != "merge" or not self._joins_lazily(chains):
            for chain in chains:  # the op reads the files: imported layers are fetched now
                await materialize(self.store, chain, threads)
        async with self.solver.limiter:
            shared.start()
            ctx = OpContext(
                store=self.store,
                drivers=self.solver.drivers,
                client=self.client,
                progress=_Sink(shared),
                cache_mounts=self.solver.mounts,
                name=shared.name,
                allow=self.allow,
                threads=threads,
                blobs_only=vertex.kind == "source" and vertex.digest not in self.read,
            )
            outputs = await shared.op.run(ctx, chains)
        results = [(result_key(key, n), chain) for n, chain in enumerate(outputs)]
        await anyio.to_thread.run_sync(self._save, keys, results, explanation, limiter=threads)
        # After the last await: a build that attached while the results were saved gets them
        # in its lease too (this build's lease holds them meanwhile).
        shared.found(results)
        shared.vertex_event(started=shared.started, completed=time.time())
        return results

    def _joins_lazily(self, chains: Sequence[Chain]) -> bool:
        """Whether a merge of ``chains`` is only their layers stacked (overlay, shallow
        enough), so imported layers in them stay unfetched; otherwise it flattens files."""
        store = self.store
        return store.format == "overlay" and sum(len(c) for c in chains) <= store.max_depth

    def _lookup(self, shared: _Shared, key: str, *, linked: bool = True) -> Outputs | None:
        found = []
        for output in range(shared.op.outputs):
            rkey = result_key(key, output)
            hit: Hit | None = self.cache.lookup(rkey)
            if hit is None and linked:
                hit = self._lookup_linked(shared, output, rkey)
            if hit is None:
                return None
            found.append((hit.key, hit.chain))
        return found

    def _lookup_resolved(self, shared: _Shared, explanation: dict[str, Any]) -> Outputs | None:
        """Look the resolved key up; an input result known by other keys too (one imported
        under the key another machine found it by) is tried by each of them."""
        record = {k: v for k, v in explanation.items() if k != "vertex"}
        choices: list[list[dict[str, Any]]] = []
        for inp in record["inputs"]:
            if "result" in inp:
                names = [inp["result"], *(a for a in self.store.aliases(inp["result"]))]
                choices.append([{**inp, "result": n} for n in dict.fromkeys(names)])
            else:
                choices.append([inp])
        for n, inputs in enumerate(itertools.product(*choices)):
            if n >= _ALTERNATIVES:
                break
            hit = self._lookup(shared, key_digest({**record, "inputs": list(inputs)}), linked=False)
            if hit is not None:
                return hit
        return None

    def _link(self, key: str, hit: Outputs, explanation: dict[str, Any]) -> None:
        text = json.dumps(explanation, sort_keys=True)
        with self.store.batch():
            for n, (rkey, _) in enumerate(hit):
                self.store.link_key(result_key(key, n), rkey, explanation["vertex"], text)

    def _save(self, keys: list[str], results: Outputs, explanation: dict[str, Any]) -> None:
        text = json.dumps(explanation, sort_keys=True)
        with self.store.batch():
            for n, (rkey, chain) in enumerate(results):
                self.store.save_result(rkey, chain)
                for key in keys:
                    self.store.link_key(result_key(key, n), rkey, explanation["vertex"], text)

    async def _resolved_key(
        self, vertex: Vertex, chains: list[Chain]
    ) -> tuple[str, dict[str, Any]]:
        """The key with inputs named by result key, and copy sources by content checksum."""
        record = dict(self.records[vertex.digest])
        inputs = [dict(i) for i in record["inputs"]]
        for n, inp in enumerate(vertex.op.inputs):
            outputs = await self.shared[inp.digest].result.run(self._never)
            inputs[n] = {"result": outputs[inp.index][0], "selector": inputs[n]["selector"]}
        reads = self.shared[vertex.digest].op.content_inputs()

        def checksums() -> None:
            for index, copies in reads.items():
                with self.store.view(chains[index]) as tree:
                    hasher = ContentHasher(
                        tree,
                        inode_cache=self.store.hash_cache(),
                        known=self.store.known_digests(chains[index]),
                    )
                    sums = []
                    for copy in copies:
                        try:
                            sums.append(
                                hasher.checksum(
                                    copy.src,
                                    follow_links=copy.followSymlink,
                                    wildcard=copy.allowWildcard,
                                )
                            )
                        except UserError:
                            sums.append("missing")  # the copy itself reports it
                inputs[index] = {
                    "checksum": key_digest({"paths": sums}),
                    "selector": inputs[index]["selector"],
                }

        if reads:
            await anyio.to_thread.run_sync(checksums, limiter=self.solver.threads)
        record["inputs"] = inputs
        return key_digest(record), {"vertex": self.shared[vertex.digest].name, **record}


def _content_key(store: Store, chain: Chain, reads: Sequence[tuple[str, bool, bool]]) -> str | None:
    """BuildKit's content key of a client's directory (``chain``) read at ``reads``; None
    when a path is missing (the step itself says so)."""
    from llbkit.core.fs.buildkit_contenthash import BuildKitHasher, content_key

    with store.view(chain) as tree:
        try:
            return content_key(BuildKitHasher(tree, local=True), reads)
        except OSError:
            return None


def _reason(err: UserError | OSError) -> str:
    """What a step's failure says."""
    if isinstance(err, OSError) and not isinstance(err, UserError):
        return f"{err.strerror or err}: {err.filename or ''}"
    return str(err)
