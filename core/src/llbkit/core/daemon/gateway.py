"""``moby.buildkit.v1.frontend.LLBBridge``: the gateway through which a frontend running
outside the daemon drives a build. buildctl's ``build`` is such a frontend — it sends a
``Control.Solve`` with neither definition nor frontend, then solves over this API and returns
its result — so llbkitd serves it for buildctl to work at all.

The build's frontend is a :class:`Forwarder`: it hands the engine's frontend client to the
gateway's calls (found by the ``buildkit-controlapi-buildid`` metadata) and gives the engine
what the client returns.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from llbkit.core.api._pb import caps_pb2, fsutil_pb2, gateway_pb2, gateway_pb2_grpc
from llbkit.core.control.errdetails import abort_failed, shown_source
from llbkit.core.control.layout_images import LAYOUT_SCHEME
from llbkit.core.errors import SourceError, UserError
from llbkit.core.llb._pb import ops_pb2  # noqa: F401 - registers pb.* for gateway_pb2
from llbkit.core.plugins.context import Platform
from llbkit.core.plugins.frontend import FileStat, FrontendClient, FrontendOutput

if TYPE_CHECKING:
    from llbkit.core.control import Controller
    from llbkit.core.plugins.context import Result

__all__ = ["BUILD_ID", "Forwarder", "Forwarders", "GatewayService"]

BUILD_ID = "buildkit-controlapi-buildid"
#: the most a ReadFile answers (a message's limit less room for its framing)
READ_LIMIT = (16 << 20) - (64 << 10)
#: how long a gateway call waits for its build's Control.Solve to arrive
ARRIVAL = 30.0
#: ResolveImageConfigRequest.ResolverType of the client's OCI layouts (0: the registries)
_OCI_LAYOUT_RESOLVER = 1
#: what the gateway can do, as BuildKit v0.11 names it (``frontend/gateway/pb/caps.go``)
FRONTEND_CAPS = (
    "solve.base", "solve.inlinereturn", "resolveimage", "resolveimage.resolvemode",
    "readfile", "return", "returnmap", "readdir", "statfile", "importcaches",
    "proto.refarray", "reference.output", "frontend.inputs", "gateway.solve.metadata",
    "frontend.caps", "gateway.solve.evaluate", "gateway.evaluate", "gateway.warnings",
)  # fmt: skip
#: the LLB the engine builds (``solver/pb/caps.go``)
LLB_CAPS = (
    "source.image", "source.image.resolvemode", "source.image.layerlimit", "source.local",
    "source.local.unique", "source.local.sessionid", "source.local.includepatterns",
    "source.local.followpaths", "source.local.excludepatterns", "source.local.sharedkeyhint",
    "source.local.differ", "source.git", "source.git.keepgitdir", "source.git.fullurl",
    "source.git.httpauth", "source.git.knownsshhosts", "source.git.mountsshsock",
    "source.git.subdir", "source.http", "source.http.checksum", "source.http.perm",
    "soruce.http.uidgid", "source.ocilayout", "exec.meta.base", "exec.meta.cgroup.parent",
    "exec.meta.network", "exec.meta.proxyenv", "exec.meta.security",
    "exec.meta.security.devices.v1", "exec.meta.setsdefaultpath", "exec.meta.ulimit",
    "exec.meta.removemountstubs.recursive", "exec.mount.bind",
    "exec.mount.bind.readwrite-nooutput", "exec.mount.cache", "exec.mount.cache.sharing",
    "exec.mount.selector", "exec.mount.tmpfs", "exec.mount.tmpfs.size", "exec.mount.secret",
    "exec.mount.ssh", "exec.cgroup", "exec.secretenv", "file.base", "file.rm.wildcard",
    "file.copy.includeexcludepatterns", "file.rm.nofollowsymlink", "constraints", "platform",
    "meta.ignorecache", "meta.description", "meta.exportcache", "cache.gha", "cache.s3",
    "cache.azblob", "mergeop", "diffop", "exporter.sourcedateepoch",
)  # fmt: skip
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class _Ref:
    """A result the client holds by id: its definition, solved when something reads it."""

    definition: bytes
    platform: str
    solved: Result | None = None


@dataclass
class Forwarder:
    """The frontend of a build whose frontend is the client (a ``FrontendJob``)."""

    ref: str
    client: asyncio.Future[FrontendClient] = field(default_factory=asyncio.Future)
    returned: asyncio.Future[FrontendOutput] = field(default_factory=asyncio.Future)
    refs: dict[str, _Ref] = field(default_factory=dict)

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        if not self.client.done():
            self.client.set_result(client)
        return await self.returned


class Forwarders:
    """The builds waiting for their gateway client, by build ref; a gateway call may come
    before the build's ``Control.Solve`` does, and waits for it."""

    def __init__(self) -> None:
        self._by_ref: dict[str, Forwarder] = {}
        self._waiting: dict[str, list[asyncio.Future[Forwarder]]] = {}

    def open(self, ref: str) -> Forwarder:
        """The forwarder of build ``ref``; a ref already building is refused (as BuildKit's
        "build ID exists"): one client cannot take over another's build by naming it."""
        if ref in self._by_ref:
            raise UserError(f"build {ref} exists: a ref names one build")
        forwarder = self._by_ref[ref] = Forwarder(ref)
        for waiter in self._waiting.pop(ref, []):
            if not waiter.done():
                waiter.set_result(forwarder)
        return forwarder

    def close(self, forwarder: Forwarder) -> None:
        """End ``forwarder``'s build: gateway calls still waiting for it are told so."""
        if self._by_ref.get(forwarder.ref) is forwarder:
            del self._by_ref[forwarder.ref]
        for future in (forwarder.returned, forwarder.client):
            if not future.done():
                future.cancel()

    async def get(self, ref: str, timeout: float = ARRIVAL) -> Forwarder | None:
        if ref in self._by_ref:
            return self._by_ref[ref]
        waiter: asyncio.Future[Forwarder] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(ref, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiting.get(ref, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiting[ref]


def _caps(ids: tuple[str, ...]) -> list[caps_pb2.APICap]:
    return [caps_pb2.APICap(ID=i, Enabled=True) for i in ids]


def _stat(found: FileStat) -> fsutil_pb2.Stat:
    return fsutil_pb2.Stat(
        path=found.path,
        mode=found.mode,  # already Go's os.FileMode bits
        uid=found.uid,
        gid=found.gid,
        size=found.size,
        modTime=found.mtime,
        linkname=found.linkname,
    )


class GatewayService(gateway_pb2_grpc.LLBBridgeServicer):
    """The gateway of every build whose frontend is its client."""

    def __init__(self, controller: Controller, forwarders: Forwarders) -> None:
        self.controller = controller
        self.forwarders = forwarders
        self._counter = 0

    async def _build(self, context: Context) -> tuple[Forwarder, FrontendClient]:
        ids = [
            v.decode() if isinstance(v, bytes) else v
            for k, v in context.invocation_metadata() or ()
            if k == BUILD_ID
        ]
        forwarder = await self.forwarders.get(ids[0]) if len(ids) == 1 else None
        if forwarder is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no build {ids[0] if ids else '(no ' + BUILD_ID + ' metadata)'} is waiting "
                "for its frontend",
            )
            raise AssertionError  # abort raises
        try:
            return forwarder, await forwarder.client
        except asyncio.CancelledError:
            if forwarder.client.cancelled():  # the build ended before its frontend started
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"build {forwarder.ref} has ended"
                )
            raise

    async def _solved(self, forwarder: Forwarder, client: FrontendClient, ref: str) -> Result:
        held = forwarder.refs.get(ref)
        if held is None:
            raise UserError(f"no result {ref!r} in this build")
        if held.solved is None:
            held.solved = await client.solve(held.definition)
        return held.solved

    def _new_ref(self, forwarder: Forwarder, definition: bytes, platform: str) -> str:
        self._counter += 1
        ref = f"{os.urandom(8).hex()}{self._counter}"
        forwarder.refs[ref] = _Ref(definition, platform)
        return ref

    async def Ping(self, request: gateway_pb2.PingRequest, context: Context) -> Any:
        from llbkit.core.control.wire import worker_to_pb

        await self._build(context)
        info = await self.controller.info()
        workers = await self.controller.workers()
        return gateway_pb2.PongResponse(
            FrontendAPICaps=_caps(FRONTEND_CAPS),
            LLBCaps=_caps(LLB_CAPS),
            Workers=[worker_to_pb(w, info) for w in workers],
        )

    async def Solve(self, request: gateway_pb2.SolveRequest, context: Context) -> Any:
        forwarder, client = await self._build(context)
        try:
            if request.Frontend:
                output = await self._frontend(request, client)
            else:
                ops = getattr(request.Definition, "def")  # a Python keyword as a field name
                definition = request.Definition.SerializeToString() if ops else b""
                output = FrontendOutput({str(Platform()): definition} if definition else {})
            result = gateway_pb2.Result(metadata=dict(output.metadata))
            refs = {
                platform: self._new_ref(forwarder, data, platform)
                for platform, data in output.definitions.items()
            }
            if request.Evaluate:
                for ref in refs.values():
                    await self._solved(forwarder, client, ref)
        except UserError as err:
            # With the Dockerfile's lines as a typed detail: buildctl's build function hands
            # the error back (Return) with them, and prints them as buildkitd's.
            await abort_failed(context, err, str(err))
        if (len(refs) == 1 and not request.Frontend) or (
            len(refs) == 1 and "refs.platforms" not in output.metadata
        ):
            ((platform, ref),) = refs.items()
            result.ref.CopyFrom(gateway_pb2.Ref(id=ref))
        elif refs:
            for platform, ref in refs.items():
                result.refs.refs[platform].CopyFrom(gateway_pb2.Ref(id=ref))
        else:
            result.ref.CopyFrom(gateway_pb2.Ref(id=""))
        if not request.allowResultReturn:
            only = result.ref.id if result.WhichOneof("result") == "ref" else ""
            return gateway_pb2.SolveResponse(ref=only)
        return gateway_pb2.SolveResponse(result=result)

    async def _frontend(
        self, request: gateway_pb2.SolveRequest, client: FrontendClient
    ) -> FrontendOutput:
        frontend = self.controller.drivers.frontend(request.Frontend)
        options = dict(request.FrontendOpt)
        # buildctl passes its --import-cache to the frontend too; the build already reads
        # them (Control.Solve carries the same list), for every solve of the build.
        options.pop("cache-imports", None)
        job = await frontend.resolve(options)
        return await job.solve(client)

    async def Return(self, request: gateway_pb2.ReturnRequest, context: Context) -> Any:
        forwarder, _ = await self._build(context)
        if forwarder.returned.done():
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the result was returned")
        if request.HasField("error") and request.error.code != 0:
            message = request.error.message or "the frontend failed"
            source = shown_source(request.error.details)
            failed = SourceError(message, source) if source else UserError(message)
            forwarder.returned.set_exception(failed)
            return gateway_pb2.ReturnResponse()
        result = request.result
        kind = result.WhichOneof("result")
        chosen: dict[str, str] = {}
        if kind == "ref":
            chosen = {"": result.ref.id}
        elif kind == "refDeprecated":
            chosen = {"": result.refDeprecated}
        elif kind == "refs":
            chosen = {p: r.id for p, r in result.refs.refs.items()}
        elif kind == "refsDeprecated":
            chosen = dict(result.refsDeprecated.refs)
        definitions: dict[str, bytes] = {}
        for platform, ref in chosen.items():
            if not ref:
                continue
            held = forwarder.refs.get(ref)
            if held is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no result {ref!r} in this build")
                raise AssertionError
            definitions[platform or held.platform] = held.definition
        forwarder.returned.set_result(FrontendOutput(definitions, dict(result.metadata)))
        return gateway_pb2.ReturnResponse()

    async def ReadFile(self, request: gateway_pb2.ReadFileRequest, context: Context) -> Any:
        forwarder, client = await self._build(context)
        try:
            result = await self._solved(forwarder, client, request.Ref)
            # One message at most, as BuildKit's gateway caps it: never a whole huge file.
            offset, length = 0, READ_LIMIT
            if request.HasField("Range"):
                offset = request.Range.Offset
                length = min(request.Range.Length or READ_LIMIT, READ_LIMIT)
            data = await client.read_ref_file(
                result, request.FilePath, offset=offset, length=length
            )
        except UserError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        return gateway_pb2.ReadFileResponse(Data=data)

    async def ReadDir(self, request: gateway_pb2.ReadDirRequest, context: Context) -> Any:
        forwarder, client = await self._build(context)
        try:
            result = await self._solved(forwarder, client, request.Ref)
            entries = await client.read_dir(result, request.DirPath, request.IncludePattern)
        except UserError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        return gateway_pb2.ReadDirResponse(entries=[_stat(e) for e in entries])

    async def StatFile(self, request: gateway_pb2.StatFileRequest, context: Context) -> Any:
        forwarder, client = await self._build(context)
        try:
            result = await self._solved(forwarder, client, request.Ref)
            found = await client.stat_file(result, request.Path)
        except UserError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        return gateway_pb2.StatFileResponse(stat=_stat(found))

    async def Evaluate(self, request: gateway_pb2.EvaluateRequest, context: Context) -> Any:
        forwarder, client = await self._build(context)
        try:
            await self._solved(forwarder, client, request.Ref)
        except UserError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        return gateway_pb2.EvaluateResponse()

    async def Inputs(self, request: gateway_pb2.InputsRequest, context: Context) -> Any:
        _, client = await self._build(context)
        response = gateway_pb2.InputsResponse()
        for name, data in client.inputs().items():
            response.Definitions[name].ParseFromString(data)
        return response

    async def ResolveImageConfig(
        self, request: gateway_pb2.ResolveImageConfigRequest, context: Context
    ) -> Any:
        _, client = await self._build(context)
        platform = Platform()
        if request.HasField("Platform"):
            platform = Platform(
                request.Platform.OS or "linux",
                request.Platform.Architecture or "amd64",
                request.Platform.Variant,
            )
        mode = request.ResolveMode or "default"
        if mode not in ("default", "pull", "local"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"resolve mode {mode!r}")
        ref = request.Ref
        if request.ResolverType == _OCI_LAYOUT_RESOLVER:
            # From the client's OCI layout StoreID: the reference gives only the digest.
            ref = f"{LAYOUT_SCHEME}{request.StoreID}@{ref.rpartition('@')[2]}"
        try:
            image = await client.images.resolve_image_config(
                ref,
                platform,
                mode,  # type: ignore[arg-type]
            )
        except UserError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        return gateway_pb2.ResolveImageConfigResponse(Digest=image.digest, Config=image.config)

    async def Warn(self, request: gateway_pb2.WarnRequest, context: Context) -> Any:
        _, client = await self._build(context)
        client.warn(
            request.short.decode(errors="replace"),
            detail=[d.decode(errors="replace") for d in request.detail],
            url=request.url,
        )
        return gateway_pb2.WarnResponse()
