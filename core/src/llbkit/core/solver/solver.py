"""The solver: from a definition's terminal, compute keys, ask the cache, run only the misses.

One :class:`Solver` serves every build of an engine. A vertex is shared by digest across the
builds running at the same time: its key and its run happen once, and its progress reaches
every build that asked for it. Within a build, vertices run as soon as their inputs are ready,
under the engine's ``max-parallelism``; the first failure cancels the rest of that build.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio

from llbkit.core.cache.store import Chain, Store
from llbkit.core.errors import UserError, first_error
from llbkit.core.fs.contenthash import ContentHasher
from llbkit.core.llb.definition import LoadedDefinition, Vertex
from llbkit.core.plugins.context import ClientIO, Platform, ProgressEvent
from llbkit.core.solver.exec_op import CacheMounts, run_exec
from llbkit.core.solver.keys import (
    content_inputs,
    key_digest,
    normalized_op_digest,
    result_key,
    selectors,
    vertex_name,
)
from llbkit.core.solver.ops import run_diff, run_file, run_merge

__all__ = ["BuildFailed", "SolvedResult", "Solver", "SourceResolver"]

T = TypeVar("T")
Emit = Callable[[ProgressEvent], None]
#: (identifier, attrs, platform) -> a parsed source job
SourceResolver = Callable[[str, Mapping[str, str], Platform | None], Awaitable[Any]]


class BuildFailed(UserError):
    """A vertex failed: names it, says why, and carries the tail of its log."""

    def __init__(
        self, name: str, reason: str, log_tail: Sequence[str] = (), source: str = ""
    ) -> None:
        self.name = name
        self.reason = reason
        self.log_tail = list(log_tail)
        #: where the step came from (a frontend's ``llbkit.source`` description), if known
        self.source = source
        # A process's own failure reads exactly as BuildKit's; others name the step.
        shown = reason if reason.startswith('process "') else f"{name}: {reason}"
        super().__init__(f"failed to solve: {shown}")


class _Flight(Generic[T]):
    """A computation run once however many tasks ask; if its runner is cancelled, the next
    asker takes over instead of inheriting the cancellation."""

    def __init__(self) -> None:
        self._done: anyio.Event | None = None
        self._finished = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def set(self, value: T) -> None:
        self._done = anyio.Event()
        self._done.set()
        self._finished = True
        self._value = value

    @property
    def finished(self) -> bool:
        return self._finished

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        while True:
            if self._done is None:
                done = self._done = anyio.Event()
                try:
                    value = await fn()
                except anyio.get_cancelled_exc_class():
                    self._done = None
                    done.set()
                    raise
                except BaseException as err:
                    self._error = err
                    self._finished = True
                    done.set()
                    raise
                self._value = value
                self._finished = True
                done.set()
                return value
            done = self._done
            await done.wait()
            if self._done is None:
                continue
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[return-value]


@dataclass
class _Shared:
    """A vertex as all concurrent builds see it."""

    sid: str
    vertex: Vertex
    name: str
    key: _Flight[str] = field(default_factory=_Flight)
    result: _Flight[list[tuple[str, Chain]]] = field(default_factory=_Flight)
    subscribers: list[Emit] = field(default_factory=list)
    history: list[ProgressEvent] = field(default_factory=list)
    users: int = 0
    started: float | None = None
    logs: list[bytes] = field(default_factory=list)
    job: Any = None

    def emit(self, kind: str, **data: Any) -> None:
        event = ProgressEvent(kind, self.vertex.digest, time.time(), data)
        self.history.append(event)
        for subscriber in list(self.subscribers):
            subscriber(event)

    def vertex_event(self, **data: Any) -> None:
        inputs = [i.digest for i in self.vertex.op.inputs]
        self.emit("vertex", name=self.name, inputs=inputs, **data)

    def start(self) -> None:
        if self.started is None:
            self.started = time.time()
            self.vertex_event(started=self.started)


class _Sink:
    """The :class:`ProgressSink` a source or op driver reports to."""

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared

    def status(self, id: str, *, current: int = 0, total: int = 0, done: bool = False) -> None:
        now = time.time()
        self.shared.emit(
            "status", id=id, current=current, total=total, completed=now if done else None
        )

    def log(self, data: bytes, *, stream: int = 1) -> None:
        self.shared.logs.append(data)
        self.shared.emit("log", stream=stream, data=data.decode("utf-8", "replace"))

    def warn(self, message: str) -> None:
        self.shared.emit("warning", short=message)


class SolvedResult:
    """A built result: a chain of layers in the store, named by a portable key."""

    def __init__(self, store: Store, key: str, chain: Chain) -> None:
        self.store = store
        self._key = key
        self.chain = chain

    @property
    def key(self) -> str:
        return self._key

    async def layer_blobs(
        self,
        compression: str = "gzip",
        level: int | None = None,
        epoch: int | None = None,
        force: bool = False,
    ) -> list[Any]:
        """The result's layers as image blobs (made once, kept in the content store)."""
        from llbkit.core.cache.blobs import layer_blobs

        return await anyio.to_thread.run_sync(
            functools.partial(
                layer_blobs,
                self.store,
                self.chain,
                compression=compression,
                level=level,
                epoch=epoch,
                force=force,
            )
        )

    def blob_sources(self, digest: str) -> list[tuple[str, str]]:
        """(registry, repository) pairs a blob was pulled from: pushes there can mount it."""
        from llbkit.core.cache.blobs import blob_sources

        return blob_sources(self.store, digest)

    def blob_path(self, digest: str) -> Path:
        """Where a blob of :meth:`layer_blobs` is, to stream it."""
        return self.store.root.content.blob_path(digest)

    @asynccontextmanager
    async def mount(self) -> AsyncIterator[Path]:
        view = self.store.view(self.chain)
        path = await anyio.to_thread.run_sync(view.__enter__)
        try:
            yield path
        finally:
            await anyio.to_thread.run_sync(view.__exit__, None, None, None)


class Solver:
    """Solves definitions against one store; shared by all builds of an engine."""

    def __init__(
        self,
        store: Store,
        resolve_source: SourceResolver,
        max_parallelism: int = 8,
        executor: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        self.resolve_source = resolve_source
        self.executor = executor
        self.cache_mounts = CacheMounts(store)
        self.limiter = anyio.CapacityLimiter(max_parallelism)
        self._threads = anyio.CapacityLimiter(max(max_parallelism, 4) * 2)
        self._active: dict[str, _Shared] = {}

    async def solve(
        self,
        definition: LoadedDefinition,
        client: ClientIO,
        emit: Emit,
        *,
        no_cache: bool = False,
        allow: Sequence[str] = (),
    ) -> SolvedResult | None:
        """Build the definition's result; ``None`` when it names scratch.

        :param allow: the entitlements granted (``network.host``, ``security.insecure``).
        """
        order = self._order(definition)
        if not order:
            return None
        build = _Build(self, definition, client, emit, no_cache=no_cache, order=order)
        build.allow = list(allow)
        try:
            return await build.run()
        finally:
            build.detach()

    @staticmethod
    def _order(definition: LoadedDefinition) -> list[Vertex]:
        """The terminal's ancestors, inputs before the vertices that use them."""
        terminal = definition.terminal
        if not terminal.op.inputs:
            return []
        order: list[Vertex] = []
        state: dict[str, int] = {}
        stack: list[tuple[Vertex, bool]] = [
            (definition.by_digest[terminal.op.inputs[0].digest], False)
        ]
        while stack:
            vertex, expanded = stack.pop()
            if expanded:
                state[vertex.digest] = 2
                order.append(vertex)
                continue
            if vertex.digest in state:
                continue
            state[vertex.digest] = 1
            stack.append((vertex, True))
            for inp in reversed(vertex.op.inputs):
                if inp.digest not in state:
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
        no_cache: bool,
        order: list[Vertex],
    ) -> None:
        self.solver = solver
        self.store = solver.store
        self.definition = definition
        self.client = client
        self.emit = emit
        self.order = order
        self.shared: dict[str, _Shared] = {}
        self.allow: list[str] = []
        self.keys: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        names: dict[str, str] = {}
        self.ignored: set[str] = set()
        for vertex in order:
            ignore = no_cache or vertex.metadata.ignore_cache
            if ignore:
                self.ignored.add(vertex.digest)
            sid = vertex.digest + ("-ignorecache" if ignore else "")
            if vertex.kind == "source" and vertex.op.source.identifier.startswith("local://"):
                # A client's directory is that client's: never shared with another build.
                sid += f"-{id(client)}"
            names[vertex.digest] = vertex_name(vertex, names)
            shared = solver._active.get(sid)
            if shared is None:
                shared = solver._active[sid] = _Shared(sid, vertex, names[vertex.digest])
            shared.users += 1
            shared.subscribers.append(emit)
            for event in shared.history:
                emit(event)
            self.shared[vertex.digest] = shared

    def detach(self) -> None:
        for shared in self.shared.values():
            shared.subscribers.remove(self.emit)
            shared.users -= 1
            if shared.users == 0:
                self.solver._active.pop(shared.sid, None)
                discard = getattr(shared.job, "discard", None)
                if discard is not None:
                    discard()  # e.g. a download made for a key whose result was cached

    def ignore(self, vertex: Vertex) -> bool:
        return vertex.digest in self.ignored

    # -- keys -------------------------------------------------------------------------------

    async def _source_key(self, vertex: Vertex) -> str:
        shared = self.shared[vertex.digest]

        async def compute() -> str:
            job = await self._source_job(vertex)
            shared.start()
            key = await job.cache_key(self.client)
            return key_digest({"source": f"buildkit.source.v0:{key}"})

        return await shared.key.run(compute)

    async def _source_job(self, vertex: Vertex) -> Any:
        shared = self.shared[vertex.digest]
        if shared.job is None:
            platform = None
            if vertex.op.HasField("platform"):
                p = vertex.op.platform
                platform = Platform(p.OS, p.Architecture, p.Variant)
            shared.job = await self.solver.resolve_source(
                vertex.op.source.identifier, dict(vertex.op.source.attrs), platform
            )
        return shared.job

    def _key(self, vertex: Vertex) -> str:
        sels = selectors(vertex.op)
        record = {
            "op": normalized_op_digest(vertex.op),
            "kind": vertex.kind,
            "inputs": [
                {"key": self.keys[i.digest], "output": i.index, "selector": sels.get(n, "")}
                for n, i in enumerate(vertex.op.inputs)
            ],
        }
        self.records[vertex.digest] = record
        return key_digest(record)

    async def _compute_keys(self) -> None:
        sources = [v for v in self.order if v.kind == "source"]
        try:
            async with anyio.create_task_group() as tg:
                for vertex in sources:
                    tg.start_soon(self._guard, vertex, self._set_source_key, vertex)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        for vertex in self.order:
            if vertex.kind != "source":
                self.keys[vertex.digest] = self._key(vertex)

    async def _set_source_key(self, vertex: Vertex) -> None:
        self.keys[vertex.digest] = await self._source_key(vertex)
        self.records[vertex.digest] = {"source": vertex.op.source.identifier}
        shared = self.shared[vertex.digest]
        if shared.result.finished or self.ignore(vertex):
            return
        hit = self._lookup_key(vertex, self.keys[vertex.digest])
        if hit is not None and not shared.result.finished:
            # Known content: a local context was transferred (shown as done), others cached.
            shared.result.set(hit)
            now = time.time()
            local = vertex.op.source.identifier.startswith("local://")
            shared.vertex_event(started=shared.started or now, completed=now, cached=not local)

    async def _guard(self, vertex: Vertex, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn``, turning any failure into a :class:`BuildFailed` naming the vertex."""
        shared = self.shared[vertex.digest]
        try:
            await fn(*args)
        except anyio.get_cancelled_exc_class():
            if shared.started is not None and not shared.result.finished:
                shared.vertex_event(
                    started=shared.started,
                    completed=time.time(),
                    error="context canceled",
                    canceled=True,
                )
            raise
        except BuildFailed:
            raise
        except UserError as err:
            raise self._failed(shared, str(err)) from None
        except OSError as err:
            raise self._failed(shared, f"{err.strerror or err}: {err.filename or ''}") from None

    def _failed(self, shared: _Shared, reason: str) -> BuildFailed:
        shared.vertex_event(
            started=shared.started or time.time(), completed=time.time(), error=reason
        )
        tail = b"".join(shared.logs).decode("utf-8", "replace").splitlines()[-10:]
        source = shared.vertex.metadata.description.get("llbkit.source", "")
        return BuildFailed(shared.name, reason, tail, source)

    # -- results ----------------------------------------------------------------------------

    @staticmethod
    def _outputs(vertex: Vertex) -> int:
        if vertex.kind == "file":
            return len({a.output for a in vertex.op.file.actions if a.output >= 0})
        if vertex.kind == "exec":
            return len({m.output for m in vertex.op.exec.mounts if m.output >= 0})
        return 1

    async def run(self) -> SolvedResult:
        await self._compute_keys()
        # Walk down from the terminal: a hit needs nothing below it; a miss needs its inputs.
        need: set[str] = set()
        shown: set[str] = set()
        stack = [self.definition.by_digest[self.definition.result.digest]]
        while stack:
            vertex = stack.pop()
            if vertex.digest in need or vertex.digest in shown:
                continue
            shared = self.shared[vertex.digest]
            if not shared.result.finished and not self.ignore(vertex):
                hit = await anyio.to_thread.run_sync(
                    self._lookup_key,
                    vertex,
                    self.keys[vertex.digest],
                    limiter=self.solver._threads,
                )
                if hit is not None and not shared.result.finished:
                    shared.result.set(hit)
                    now = time.time()
                    shared.vertex_event(started=shared.started or now, completed=now, cached=True)
            if shared.result.finished:
                shown.add(vertex.digest)
                continue
            need.add(vertex.digest)
            stack.extend(self.definition.by_digest[i.digest] for i in vertex.op.inputs)
        now = time.time()
        for vertex in self.order:
            shared = self.shared[vertex.digest]
            if vertex.digest not in need and shared.started and not shared.result.finished:
                # A source read only for its key: local contexts were transferred, others
                # were cached.
                local = vertex.op.source.identifier.startswith("local://")
                shared.vertex_event(started=shared.started, completed=now, cached=not local)
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
        return SolvedResult(self.store, key, chain)

    async def _never(self) -> list[tuple[str, Chain]]:
        raise AssertionError("the terminal's input was not solved")

    async def _produce(self, vertex: Vertex) -> None:
        shared = self.shared[vertex.digest]
        await shared.result.run(lambda: self._make(vertex))

    async def _input_chains(self, vertex: Vertex) -> list[Chain]:
        chains = []
        for inp in vertex.op.inputs:
            outputs = await self.shared[inp.digest].result.run(
                functools.partial(self._make, self.definition.by_digest[inp.digest])
            )
            chains.append(outputs[inp.index][1])
        return chains

    async def _make(self, vertex: Vertex) -> list[tuple[str, Chain]]:
        shared = self.shared[vertex.digest]
        chains = await self._input_chains(vertex)
        key = self.keys[vertex.digest]
        keys = [key]
        explanation = {"vertex": shared.name, **self.records[vertex.digest]}
        if vertex.kind != "source":
            # Inputs named by their results (and copied paths by their content): an input
            # that was rebuilt into the same result, or content that did not change, still hits.
            resolved, explanation = await self._resolved_key(vertex, chains)
            if resolved != key:
                keys.append(resolved)
                if not self.ignore(vertex):
                    hit = await anyio.to_thread.run_sync(
                        self._lookup_key, vertex, resolved, limiter=self.solver._threads
                    )
                    if hit is not None:
                        await anyio.to_thread.run_sync(
                            self._link, vertex, key, hit, explanation, limiter=self.solver._threads
                        )
                        now = time.time()
                        shared.vertex_event(
                            started=shared.started or now, completed=now, cached=True
                        )
                        return hit
        async with self.solver.limiter:
            shared.start()
            outputs = await self._execute(vertex, chains)
        results = [(result_key(key, n), chain) for n, chain in enumerate(outputs)]
        await anyio.to_thread.run_sync(
            self._save, vertex, keys, results, explanation, limiter=self.solver._threads
        )
        shared.vertex_event(started=shared.started, completed=time.time())
        return results

    def _lookup_key(self, vertex: Vertex, key: str) -> list[tuple[str, Chain]] | None:
        found = []
        for output in range(self._outputs(vertex)):
            hit = self.store.lookup(result_key(key, output))
            if hit is None:
                return None
            found.append(hit)
        return found

    def _link(
        self, vertex: Vertex, key: str, hit: list[tuple[str, Chain]], explanation: dict[str, Any]
    ) -> None:
        for n, (rkey, _) in enumerate(hit):
            self.store.link_key(
                result_key(key, n),
                rkey,
                explanation["vertex"],
                json.dumps(explanation, sort_keys=True),
            )

    def _save(
        self,
        vertex: Vertex,
        keys: list[str],
        results: list[tuple[str, Chain]],
        explanation: dict[str, Any],
    ) -> None:
        for n, (rkey, chain) in enumerate(results):
            self.store.save_result(rkey, chain)
            for key in keys:
                self.store.link_key(
                    result_key(key, n),
                    rkey,
                    explanation["vertex"],
                    json.dumps(explanation, sort_keys=True),
                )

    def _commit_image_layers(
        self, items: list[dict[str, Any]], name: str, record_type: str = "regular"
    ) -> Chain:
        from llbkit.core.cache.blobs import LayerBlob, register_blob

        chain: list[int] = []
        for n, item in enumerate(items):
            layer = self.store.commit_layer(
                item["dir"],
                parent=chain[-1] if chain else None,
                description=f"{name} layer {n + 1}/{len(items)}",
                record_type=record_type,
            )
            chain.append(layer)
            media = str(item["media_type"])
            compression = (
                "gzip" if "gzip" in media else "zstd" if "zstd" in media else "uncompressed"
            )
            if item["diff_id"]:
                blob = LayerBlob(item["digest"], item["diff_id"], int(item["size"]), compression)
                register_blob(
                    self.store,
                    layer,
                    item["blob"],
                    blob,
                    media_type=media,
                    source=item.get("source"),
                )
        return self.store.compact(tuple(chain))

    async def _resolved_key(
        self, vertex: Vertex, chains: list[Chain]
    ) -> tuple[str, dict[str, Any]]:
        """The key with inputs named by result key, and copy sources by content checksum."""
        record = dict(self.records[vertex.digest])
        inputs = [dict(i) for i in record["inputs"]]
        for n, inp in enumerate(vertex.op.inputs):
            outputs = await self.shared[inp.digest].result.run(self._never)
            inputs[n] = {"result": outputs[inp.index][0], "selector": inputs[n]["selector"]}
        reads = content_inputs(vertex.op)

        def checksums() -> None:
            for index, copies in reads.items():
                with self.store.view(chains[index]) as tree:
                    hasher = ContentHasher(tree, inode_cache=self.store.hash_cache())
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
            await anyio.to_thread.run_sync(checksums, limiter=self.solver._threads)
        record["inputs"] = inputs
        return key_digest(record), {"vertex": self.shared[vertex.digest].name, **record}

    async def _execute(self, vertex: Vertex, chains: list[Chain]) -> list[Chain]:
        shared = self.shared[vertex.digest]
        kind = vertex.kind
        threads = self.solver._threads
        if kind == "source":
            job = await self._source_job(vertex)
            fetch_layers = getattr(job, "fetch_layers", None)
            if fetch_layers is not None:
                # An image: one store layer per image layer, its original blob kept for export.
                items = await fetch_layers(
                    self.client, self.store.stage(), _Sink(shared), self.store.format
                )
                return [
                    await anyio.to_thread.run_sync(
                        self._commit_image_layers,
                        items,
                        shared.name,
                        getattr(job, "record_type", "regular"),
                        limiter=threads,
                    )
                ]
            stage = self.store.stage()
            tree = stage / "tree"
            tree.mkdir()
            await job.fetch(self.client, tree, _Sink(shared))
            record_type = getattr(job, "record_type", "regular")
            ident = vertex.op.source.identifier
            if ident.startswith("local://"):
                record_type = "source.local"
            elif ident.startswith("git://"):
                record_type = "source.git.checkout"
            layer = await anyio.to_thread.run_sync(
                lambda: self.store.commit_layer(
                    tree, description=shared.name, record_type=record_type
                ),
                limiter=threads,
            )
            return [(layer,)]
        if kind == "file":
            return await anyio.to_thread.run_sync(
                run_file, self.store, vertex.op, chains, shared.name, limiter=threads
            )
        if kind == "merge":
            return [await anyio.to_thread.run_sync(run_merge, self.store, chains, limiter=threads)]
        if kind == "diff":
            diff = vertex.op.diff
            lower = chains[diff.lower.input] if diff.lower.input >= 0 else ()
            upper = chains[diff.upper.input] if diff.upper.input >= 0 else ()
            return [
                await anyio.to_thread.run_sync(
                    run_diff, self.store, lower, upper, shared.name, limiter=threads
                )
            ]
        if kind == "exec":
            if self.solver.executor is None:
                raise UserError("running processes needs a worker; none is configured")
            executor = await self.solver.executor()
            return await run_exec(
                self.store,
                vertex.op,
                chains,
                name=shared.name,
                executor=executor,
                client=self.client,
                progress=_Sink(shared),
                cache_mounts=self.solver.cache_mounts,
                allowed=self.allow,
            )
        raise UserError(f"{kind} ops are not supported by this release")
