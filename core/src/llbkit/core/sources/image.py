"""``docker-image://`` sources: a reference, normalized as Docker does, and its resolve mode."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from llbkit.core.errors import PluginError, first_error
from llbkit.core.reference import Reference, parse_reference
from llbkit.core.sources._base import (
    BuiltinSource,
    ParsedSource,
    check_attrs,
    choice,
    image_key,
    parse_int,
    strip_scheme,
)
from llbkit.core.sources.growing import DownloadFailed, GrowingFile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from llbkit.core.plugins.context import ClientIO, Platform, PluginContext
    from llbkit.core.plugins.imagestore import ImageStore
    from llbkit.core.plugins.lazysource import GrowingBlob, RemoteLayer
    from llbkit.core.plugins.progress import ProgressSink
    from llbkit.core.plugins.source import FetchedLayer, ImageConfig, ResolveMode
    from llbkit.core.registry.client import RegistryClient, ResolvedImage

#: layers of one image pulled at a time, as BuildKit's resolver limits fetches per repository
PULLS = 4
#: the size from which a layer is unpacked while it downloads: below it, unpacking after the
#: download is sooner (the two threads would take turns on the interpreter for little overlap)
STREAMED_FROM = 8 << 20
#: how often a download says how far it got (BuildKit's pull progress ticks every 150 ms)
PROGRESS_EVERY = 0.15

#: what pulling and unpacking a layer imports: imported while the registry is asked
PULL_MODULES = (
    "llbkit.core.snapshot.untar",
    "llbkit.core.sources.stored_image",
    "llbkit.core.cache.layertar",
    "isal.igzip_threaded",
)

_KNOWN = ("image.resolvemode", "image.recordtype", "image.layerlimit", "image.checksum")


@dataclass(frozen=True)
class ImageJob(ParsedSource):
    identifier: str
    reference: Reference
    platform: Platform | None
    resolve_mode: str = "default"
    record_type: str = "regular"
    layer_limit: int | None = None
    driver: ImageSource | None = field(default=None, compare=False)
    _resolved: dict[str, ResolvedImage] = field(default_factory=dict, compare=False)
    #: the blobs of the driver's this job holds (see :meth:`ImageSource.blob`)
    _holding: list[str] = field(default_factory=list, compare=False)

    def _platform(self) -> Platform:
        from llbkit.core.plugins.context import Platform

        return self.platform or Platform()

    async def resolve_image(self) -> ResolvedImage:
        """The manifest and config for the build's platform (once per job)."""
        if "image" not in self._resolved:
            assert self.driver is not None
            self._resolved["image"] = await self.driver.resolve_image(
                self.reference, self._platform(), self.resolve_mode
            )
        return self._resolved["image"]

    @property
    def key_status(self) -> str:
        """The sub-task BuildKit shows while it resolves the manifest for the key."""
        return f"resolve {self.reference}"

    async def cache_key(self, client: ClientIO) -> str:
        """BuildKit's image key: the manifest digest and the platform."""
        image = await self.resolve_image()
        return image_key(image.manifest_digest, self._platform(), self.layer_limit)

    async def diff_ids(self) -> list[str]:
        """The diff ids of the layers :meth:`fetch_layers` brings, from the image's config
        (none when it does not list one per layer)."""
        image = await self.resolve_image()
        ids = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        if len(ids) != len(image.layers) or not all(isinstance(i, str) for i in ids):
            return []
        return ids[: self.layer_limit]

    async def _pull(
        self,
        progress: ProgressSink,
        streamed: Callable[[int, Any, GrowingFile], None] | None = None,
        skip: int = 0,
    ) -> tuple[Any, list[Any], dict[str, Path]]:
        """The image, its layers (up to the limit) and each pulled blob's path: all pulled at
        once, each verified by the driver; each download handed to ``streamed`` (with the
        layer's index and descriptor) as it starts. The ``skip`` bottom layers are left out
        (the store has them)."""
        assert self.driver is not None
        image = await self.resolve_image()
        layers = list(image.layers)[: self.layer_limit]
        paths: dict[str, Path] = {}

        pending = iter(enumerate(layers[skip:], skip))

        async def puller(http: Any) -> None:
            assert self.driver is not None
            for n, desc in pending:  # shared: each layer goes to the first puller free
                handed = None if streamed is None else functools.partial(streamed, n, desc)
                paths[desc.digest] = await self.driver.blob(
                    self.reference, desc, progress, http, streamed=handed, holder=self._holding
                )

        try:
            # One registry client (connections, tokens) for every layer of the image, and a
            # few pullers, however many layers a manifest lists.
            async with self.driver.client(self.reference) as http, anyio.create_task_group() as tg:
                for _ in range(min(PULLS, len(layers))):
                    tg.start_soon(puller, http)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return image, layers, paths

    async def fetch_layers(
        self,
        client: ClientIO,
        stage: Path,
        progress: ProgressSink,
        layer_format: str,
        skip: int = 0,
    ) -> list[FetchedLayer]:
        """Pull the layers (verified, concurrently) and unpack each into its own directory
        under ``stage`` as a store layer, whiteouts kept in the store's ``layer_format``: a
        layer being downloaded is unpacked as it comes. The ``skip`` bottom layers are not
        pulled (the store has them)."""
        from llbkit.core.plugins.context import BlobSource
        from llbkit.core.plugins.source import FetchedLayer
        from llbkit.core.snapshot.untar import unpack_layer

        unpacking = anyio.CapacityLimiter(PULLS)
        started: set[int] = set()

        def unpack(n: int, desc: Any, opener: Callable[[], IO[bytes]]) -> None:
            target = stage / f"layer-{n}"
            target.mkdir()
            target.chmod(0o755)
            progress.status(f"extracting {desc.digest}")
            with opener() as stream:
                what = f"{self.reference} layer {desc.digest}"
                unpack_layer(stream, str(target), layer_format, what=what)
            progress.status(f"extracting {desc.digest}", done=True)

        async def unpack_growing(n: int, desc: Any, growing: GrowingFile) -> None:
            try:
                await anyio.to_thread.run_sync(unpack, n, desc, growing.reader, limiter=unpacking)
            except DownloadFailed:
                pass  # the download raises why
            except Exception:
                # What cannot be unpacked may be what the registry should not have sent: a
                # blob that does not match its digest is refused as that, as before.
                if not await anyio.to_thread.run_sync(growing.failed):
                    raise
            finally:
                growing.close()

        try:
            async with anyio.create_task_group() as tg:

                def streamed(n: int, desc: Any, growing: GrowingFile) -> None:
                    started.add(n)
                    tg.start_soon(unpack_growing, n, desc, growing)

                image, layers, paths = await self._pull(progress, streamed, skip)
                for n, desc in enumerate(layers[skip:], skip):
                    if n not in started:  # kept from an earlier pull: read from its file
                        opener = functools.partial(open, paths[desc.digest], "rb")
                        run = functools.partial(anyio.to_thread.run_sync, limiter=unpacking)
                        tg.start_soon(run, unpack, n, desc, opener)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        diff_ids = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        source = BlobSource(self.reference.domain, self.reference.path)
        return [
            FetchedLayer(
                tree=stage / f"layer-{n}",
                blob=paths[desc.digest],
                digest=desc.digest,
                size=desc.size,
                media_type=desc.media_type,
                diff_id=diff_ids[n] if len(diff_ids) == len(image.layers) else "",
                source=source,
                description=f"pulled from {self.reference.name}@{image.manifest_digest}",
            )
            for n, desc in enumerate(layers[skip:], skip)
        ]

    async def remote_layers(self) -> list[RemoteLayer] | None:
        """The layers as blobs, for the store to record without pulling them; ``None`` with a
        worker's image store (it keeps what a pull brings) or a config that does not give
        each layer's diff id."""
        from llbkit.core.plugins.context import BlobSource
        from llbkit.core.plugins.lazysource import RemoteLayer

        assert self.driver is not None
        if await self.driver.keeps_images():
            return None
        image = await self.resolve_image()
        layers = list(image.layers)[: self.layer_limit]
        ids = await self.diff_ids()
        if not layers or len(ids) != len(layers):
            return None
        source = BlobSource(self.reference.domain, self.reference.path)
        pulled = f"pulled from {self.reference.name}@{image.manifest_digest}"
        return [
            RemoteLayer(d.digest, d.size, d.media_type, ids[n], source, pulled)
            for n, d in enumerate(layers)
        ]

    async def fetch_blob(
        self,
        digest: str,
        dest: Path,
        progress: ProgressSink,
        *,
        streamed: Callable[[GrowingBlob], None] | None = None,
    ) -> None:
        """One layer's blob, pulled (and verified) as :meth:`fetch_layers` pulls it, linked
        to ``dest``; the driver's own file goes at once (the store adopts ``dest``). A large
        download is handed to ``streamed`` as it starts, as the eager pull hands it."""
        from llbkit.core.registry.client import RegistryError

        assert self.driver is not None
        image = await self.resolve_image()
        found = [d for d in list(image.layers)[: self.layer_limit] if d.digest == digest]
        if not found:
            raise RegistryError(f"{self.reference}: {digest} is not a layer of the image")
        holder: list[str] = []
        try:
            async with self.driver.client(self.reference) as http:
                path = await self.driver.blob(
                    self.reference, found[0], progress, http, streamed=streamed, holder=holder
                )
            await anyio.to_thread.run_sync(_link_or_copy, path, dest)
        finally:
            for held in holder:
                self.driver.release(held)

    def discard(self) -> None:
        """The build is done with the vertex: the store has the blobs it pulled (each linked
        in as its layer was committed), so the driver's copies go once no job holds them."""
        if self.driver is not None:
            for digest in self._holding:
                self.driver.release(digest)
        self._holding.clear()

    async def fetch(self, client: ClientIO, dest: Path, progress: ProgressSink) -> None:
        """Pull the layers concurrently (each verified), then apply them in order."""
        _, layers, paths = await self._pull(progress)

        def unpack() -> None:
            from llbkit.core.snapshot.untar import apply_tar

            for desc in layers:
                progress.status(f"extracting {desc.digest}")
                with open(paths[desc.digest], "rb") as stream:
                    apply_tar(stream, str(dest), what=f"{self.reference} layer {desc.digest}")
                progress.status(f"extracting {desc.digest}", done=True)

        await anyio.to_thread.run_sync(unpack)


def _link_or_copy(path: Path, dest: Path) -> None:
    try:
        os.link(path, dest)
    except OSError:  # another filesystem
        import shutil

        shutil.copyfile(path, dest)


async def _write_blob(
    chunks: AsyncIterator[bytes],
    out: IO[bytes],
    digest: Any,
    growing: GrowingFile | None,
    report: Callable[..., None],
) -> int:
    """A download's bytes into ``out`` and ``digest``, each flushed for ``growing``'s reader;
    how far it got is reported every :data:`PROGRESS_EVERY` (the first after one)."""
    done = 0
    shown = time.monotonic()
    async for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if growing is not None:
            out.flush()
            growing.grew(done)
        if time.monotonic() >= shown + PROGRESS_EVERY:
            shown = time.monotonic()
            report(current=done)
    return done


def parse_image(identifier: str, attrs: Mapping[str, str], platform: Platform | None) -> ImageJob:
    _, rest = strip_scheme(identifier, {"docker-image"})
    what = f"source {identifier}"
    check_attrs(what, attrs, "image.", _KNOWN)
    mode = choice(
        what,
        "image.resolvemode",
        attrs.get("image.resolvemode", "default"),
        {"default", "pull", "local"},
    )
    record = choice(
        what,
        "image.recordtype",
        attrs.get("image.recordtype", "regular"),
        {"regular", "internal", "frontend"},
    )
    limit = attrs.get("image.layerlimit")
    layer_limit = parse_int(what, "image.layerlimit", limit, low=1) if limit is not None else None
    return ImageJob(identifier, parse_reference(rest), platform, mode, record, layer_limit)


class ImageSource(BuiltinSource, parser=parse_image):
    """Container images from registries; blobs are kept (verified) in the driver's state. Also
    the engine's :class:`~llbkit.core.plugins.source.ImageResolver` for frontends.

    With a worker that has an image store (containerd's), images are looked up there before
    the registry (except ``image.resolvemode=pull``), blobs it has are read from it, and blobs
    pulled from a registry are written into it; a build's blobs are held there under the
    store's lease (:mod:`llbkit.core.sources.stored_image`).
    """

    def __init__(self, ctx: PluginContext) -> None:
        from llbkit.core.registry.access import EngineRegistries

        super().__init__(ctx)
        # The engine's registry settings and tokens (this source is part of the engine and
        # uses its full registry client); a driver made without them (a test's) gets defaults.
        registries = ctx.registries
        if registries is None:
            registries = EngineRegistries({})
        elif not isinstance(registries, EngineRegistries):
            raise PluginError(
                "the docker-image source runs only on the engine's own registry access"
            )
        self.registries = registries
        self._image_store: Callable[[], Awaitable[ImageStore | None]] | None = None
        #: how many jobs hold each blob in ``blobs/`` (this process owns the root)
        self._holds: dict[str, int] = {}
        self._swept = False

    def use_image_store(self, getter: Callable[[], Awaitable[ImageStore | None]]) -> None:
        """The worker's image store, as the engine hands it over
        (:class:`~llbkit.core.plugins.imagestore.UsesImageStore`)."""
        self._image_store = getter

    async def keeps_images(self) -> bool:
        """Whether a worker's image store holds what this source pulls (then every pull
        goes through it, and none is lazy)."""
        return await self._store() is not None

    async def _store(self) -> ImageStore | None:
        return None if self._image_store is None else await self._image_store()

    async def resolve(
        self, identifier: str, attrs: Mapping[str, str], platform: Platform | None
    ) -> ImageJob:
        from dataclasses import replace

        return replace(parse_image(identifier, attrs, platform), driver=self)

    def client(self, ref: Reference) -> RegistryClient:
        """A client for the running event loop (use with ``async with``)."""
        return self.registries.client(ref)

    async def resolve_image_config(
        self, ref: str, platform: Platform, mode: ResolveMode = "default"
    ) -> ImageConfig:
        from llbkit.core.plugins.source import ImageConfig

        image = await self.resolve_image(parse_reference(ref), platform, mode)
        return ImageConfig(image.digest, image.config_bytes)

    def _state(self) -> Path:
        state = self.ctx.state_dir or Path(tempfile.gettempdir(), "llbkit-images")
        state.mkdir(parents=True, exist_ok=True)
        return state

    async def resolve_image(self, ref: Reference, platform: Platform, mode: str) -> ResolvedImage:
        """Ask the registry (``pull``/``default``), or what was resolved before (``local``; the
        registry when nothing was)."""
        from llbkit.core.registry.client import (
            Descriptor,
            DirectoryMemo,
            RegistryAccessDenied,
            RegistryError,
            ResolvedImage,
        )
        from llbkit.core.registry.credentials import per_client

        if mode == "local" and per_client():
            # What another client resolved (with its credentials) is not this one's to use.
            mode = "default"
        store = None if per_client() else await self._store()
        if store is not None and mode != "pull":
            from llbkit.core.sources.stored_image import resolve_stored

            stored = await resolve_stored(store, ref, platform)
            if stored is not None:
                return stored
        index = self._state() / "resolved.json"
        name = f"{ref}@{platform}"
        try:
            known = json.loads(index.read_text())
        except (OSError, ValueError, RecursionError):
            known = {}
        if mode == "local" and name not in known:
            # Nothing known here: the registry, as BuildKit's worker asks it when its image
            # store has no such image.
            mode = "default"
        if mode != "local":
            from llbkit.core.ahead import meanwhile

            try:
                async with self.client(ref) as client:
                    ask = functools.partial(
                        client.resolve,
                        ref,
                        platform,
                        DirectoryMemo(self._state() / "content"),
                        # A digest resolved before is not asked again, unless the mode says
                        # to; a daemon's client must have been given it with its credentials.
                        reuse="none" if mode == "pull" else "proven" if per_client() else "any",
                    )
                    # A reference new here is pulled next: what that needs is imported while
                    # the registry answers. One resolved before is most often a warm build,
                    # which pulls nothing and imports no more than it did.
                    image = await (ask() if name in known else meanwhile(ask, PULL_MODULES))
            except RegistryAccessDenied:
                raise  # what another build resolved is not for whoever was refused
            except RegistryError:
                if mode == "pull" or name not in known:
                    raise
            else:
                fresh = {
                    "manifest": image.manifest_digest,
                    "index": image.index_digest,
                    "config": image.config_bytes.decode(),
                    "layers": [[d.media_type, d.digest, d.size] for d in image.layers],
                }
                if known.get(name) != fresh:  # a warm build usually finds it unchanged
                    known[name] = fresh
                    tmp = index.with_name(f".{index.name}.{os.getpid()}.{id(fresh)}")
                    tmp.write_text(json.dumps(known))
                    tmp.replace(index)
                return image
        entry = known[name]  # local, or the registry failed for what was resolved before
        return ResolvedImage(
            ref,
            entry["manifest"],
            json.loads(entry["config"]),
            entry["config"].encode(),
            [Descriptor(m, d, s) for m, d, s in entry["layers"]],
            entry.get("index", ""),
        )

    async def blob(
        self,
        ref: Reference,
        desc: Any,
        progress: ProgressSink,
        http: Any,
        *,
        streamed: Callable[[GrowingFile], None] | None = None,
        holder: list[str],
    ) -> Path:
        """The blob's path in the driver's store, downloaded with the registry client ``http``
        and verified, if missing. A download is handed to ``streamed`` as it starts, to be
        read while it comes (:mod:`llbkit.core.sources.growing`).

        The file is held for the ``holder`` (a job's list: its digest is added) until
        :meth:`release`: then, when no job holds it, it is deleted. These files are the pull's,
        not a cache beside the store's: the store links each in as its layer is committed,
        and a prune of the layer frees it (BuildKit re-pulls a pruned image too)."""
        digest_text: str = desc.digest
        if not self._swept:
            self._swept = True
            if self.ctx.state_dir is not None:  # a root's, which this process owns
                self._sweep()
        self._holds[digest_text] = self._holds.get(digest_text, 0) + 1
        try:
            path = await self._blob(ref, desc, progress, http, streamed)
        except BaseException:
            self.release(digest_text)
            raise
        holder.append(digest_text)
        return path

    def _sweep(self) -> None:
        """Before this process's first pull, no file here is held: what is here was left by
        an earlier release, which kept every pulled blob for good (the store has its own link
        to each), or by a pull that crashed. Runs synchronously, so no pull starts meanwhile."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._state() / "blobs" / "sha256"):
                if entry.is_file(follow_symlinks=False):  # a crashed pull's part file too
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def release(self, digest: str) -> None:
        """One holder of the blob is done; the last one deletes the driver's file."""
        left = self._holds.get(digest, 0) - 1
        if left > 0:
            self._holds[digest] = left
            return
        self._holds.pop(digest, None)
        _, _, hexdigest = digest.partition(":")
        if hexdigest:
            with contextlib.suppress(OSError):
                (self._state() / "blobs" / "sha256" / hexdigest).unlink()

    async def _blob(
        self,
        ref: Reference,
        desc: Any,
        progress: ProgressSink,
        http: Any,
        streamed: Callable[[GrowingFile], None] | None,
    ) -> Path:
        from llbkit.core.registry.client import RegistryError
        from llbkit.core.registry.credentials import per_client
        from llbkit.core.sources.stored_image import keep_blob

        digest_text: str = desc.digest
        algo, _, hexdigest = digest_text.partition(":")
        if algo != "sha256" or len(hexdigest) != 64:
            raise RegistryError(f"{ref}: unsupported digest {desc.digest}")
        blobs = self._state() / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        path = blobs / hexdigest
        store = None if per_client() else await self._store()
        if path.exists():
            if store is not None:
                await keep_blob(
                    store, path, digest=digest_text, size=desc.size, media=desc.media_type
                )
            return path
        stored = store is not None and await store.hold_blob(digest_text)
        fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".pull-")
        digest = hashlib.sha256()
        done = 0
        growing = None
        if streamed is not None and (desc.size or 0) >= STREAMED_FROM:
            growing = GrowingFile(tmp)
            streamed(growing)
        try:
            with os.fdopen(fd, "wb") as out:
                reading: Any = (
                    contextlib.nullcontext(store.read_blob(digest_text))
                    if stored and store is not None
                    else http.blob(ref, desc.digest)
                )
                async with reading as chunks:
                    report = functools.partial(progress.status, desc.digest, total=desc.size)
                    done = await _write_blob(chunks, out, digest, growing, report)
            if digest.hexdigest() != hexdigest:
                raise RegistryError(
                    f"{ref}: blob {desc.digest} does not match its digest "
                    f"(got sha256:{digest.hexdigest()}); refused"
                )
            os.replace(tmp, path)
        except BaseException:
            if growing is not None:
                growing.end(failed=True)
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if growing is not None:
            growing.end()
        if store is not None and not stored:
            await keep_blob(store, path, digest=digest_text, size=desc.size, media=desc.media_type)
        progress.status(desc.digest, current=done, total=desc.size, done=True)
        return path
