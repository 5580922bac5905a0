"""``--output type=oci`` and ``type=docker``: the image as a tarball (or an OCI layout
directory with ``tar=false``), written through the client."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError
from llbkit.core.gotar import GoTarWriter, Sink
from llbkit.core.plugins import (
    BuildResult,
    ByteSink,
    ExportInfo,
    PluginContext,
    Registries,
    RegistrySession,
)
from llbkit.core.plugins.imagestore import ImageStore
from llbkit.core.reference import Reference, parse_reference
from llbkit.plugins.exporter_image.assemble import (
    ANNOTATION_KEY,
    BlobSource,
    CommitOptions,
    Published,
    _bool,
    blob_file,
    created_text,
    publish,
    response,
)

OPTIONS = (
    "dest",
    "tar",
    "name",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "source-date-epoch",
    "rewrite-timestamp",
    "buildinfo",
    "buildinfo-attrs",
    "attestation-inline",
    "prefer-nondist-layers",
    "store",
    "unpack",
    "dangling-name-prefix",
    "name-canonical",
)
#: accepted so BuildKit scripts move over unchanged, but without effect here yet
NO_EFFECT = (
    # names an image kept in an image store with no name of its own (not an archive's)
    "dangling-name-prefix",
    "buildinfo",
    "buildinfo-attrs",
    "attestation-inline",
    "prefer-nondist-layers",
    "store",
    "unpack",
)
PREFIXES = (
    "annotation.",
    "annotation-index.",
    "annotation-manifest.",
    "annotation-index-descriptor.",
    "annotation-manifest-descriptor.",
)


def _check(ctx: PluginContext, attrs: Mapping[str, str]) -> None:
    for key in attrs:
        if key not in OPTIONS and not ANNOTATION_KEY.match(key):
            raise UnknownOptionError(
                f"exporter {ctx.name}", key, (*OPTIONS, *(p + "<key>" for p in PREFIXES))
            )
    if not attrs.get("dest"):
        raise ConfigError(f"exporter {ctx.name}: dest= is required (a file, or - for stdout)")


def _ref_names(names: list[str]) -> list[Reference]:
    """The parsed ``name=`` references: ``app`` is ``docker.io/library/app:latest``."""
    return [parse_reference(name) for name in names]


def _layout_files(
    published: Published, opts: CommitOptions, docker: bool, created: str, *, tarball: bool
) -> list[tuple[str, BlobSource]]:
    """The layout's files. A tarball's are what BuildKit's archive exporter (containerd's)
    writes: ``index.json`` without a media type, its one manifest's platform named, and a
    ``manifest.json`` for ``docker load`` in both formats (tags only in docker's; none for an
    index, which it cannot describe)."""
    names = opts.names
    refs = _ref_names(names)
    base: dict[str, str] = {"org.opencontainers.image.created": created}
    # The descriptor index.json holds: of the index, or of the single platform's manifest.
    single = not published.is_index
    base.update(opts.annotations_for("manifest-descriptor" if single else "index-descriptor"))
    if not tarball:
        # A folder's index.json is written as buildctl writes it from the exporter's answer:
        # the image named by its whole first name, "latest" when it has none.
        named = [{**base, "org.opencontainers.image.ref.name": str(refs[0]) if refs else "latest"}]
    else:
        # An archive lists the image once per name, as containerd's archive writer does.
        named = [
            {
                **base,
                "io.containerd.image.name": str(ref),
                "org.opencontainers.image.ref.name": ref.tag or "latest",
            }
            for ref in refs
        ] or [base]
    manifests = []
    for entry in named:
        top = published.descriptor(dict(sorted(entry.items())))  # as Go writes a map
        if single:
            top["platform"] = _platform(published.images[0][1].config)
        manifests.append(top)
    # Neither BuildKit's archive writer nor buildctl's folder writer names the index's type.
    index: dict[str, object] = {"schemaVersion": 2, "manifests": manifests}
    files: list[tuple[str, BlobSource]] = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, separators=(",", ":")).encode()),
    ]
    if docker or (tarball and single):
        image = published.images[0][1]
        manifest = [
            {
                "Config": "blobs/sha256/" + image.config_digest.split(":")[1],
                "RepoTags": [ref.familiar() for ref in refs] if docker and refs else None,
                "Layers": ["blobs/sha256/" + d.split(":")[1] for d, _, _ in image.layers],
            }
        ]
        files.append(("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()))
    seen = set()
    for digest, source in published.blobs():
        if digest not in seen:
            seen.add(digest)
            files.append(("blobs/sha256/" + digest.split(":")[1], source))
    return files


async def _fetched(files: list[tuple[str, BlobSource]]) -> list[tuple[str, bytes | Path]]:
    """Every file of a layout, each layer blob asked of its result (all are written), several
    at once: a layer imported from a cache is downloaded then."""
    found: list[bytes | Path | None] = [None] * len(files)
    limit = anyio.Semaphore(8)

    async def one(n: int, source: BlobSource) -> None:
        async with limit:
            found[n] = await blob_file(source)

    try:
        async with anyio.create_task_group() as tg:
            for n, (_, source) in enumerate(files):
                tg.start_soon(one, n, source)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [(name, data) for (name, _), data in zip(files, found, strict=True) if data is not None]


def _write_layout(files: list[tuple[str, bytes | Path]], root: Path) -> None:
    """The OCI layout as a directory under ``root`` (blobs copied file to file, not read whole)."""
    for name, source in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            path.write_bytes(source)
        else:
            shutil.copyfile(source, path)
            path.chmod(0o644)


class _SinkWriter:
    """A file-like writer, for a worker thread, onto the client's async sink: bytes go out in
    pieces of 1 MiB, one hop to the event loop each."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        if len(self.buffer) >= 1 << 20:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        if self.buffer:
            anyio.from_thread.run(self.sink.write, bytes(self.buffer))
            self.buffer.clear()


def _platform(config: bytes) -> dict[str, str]:
    """An image's platform as an OCI descriptor's JSON holds it (Go's field order)."""
    found = json.loads(config)
    platform = {"architecture": found.get("architecture", ""), "os": found.get("os", "")}
    if found.get("variant"):
        platform["variant"] = found["variant"]
    return platform


def _write_tar(files: list[tuple[str, bytes | Path]], out: Sink) -> None:
    """The layout as BuildKit's archive exporter writes it: entries in name order, dated
    1970 (the same image, the same tarball), blobs and ``oci-layout`` read-only, in the
    headers of Go's tar writer."""
    tar = GoTarWriter(out)
    for directory in ("blobs", "blobs/sha256"):
        info = tarfile.TarInfo(directory)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.add(info)
    for name, source in sorted(files, key=lambda file: file[0]):
        info = tarfile.TarInfo(name)
        info.mode = 0o644 if name.endswith(".json") else 0o444
        if isinstance(source, bytes):
            info.size = len(source)
            tar.add(info, io.BytesIO(source))
        else:
            info.size = source.stat().st_size
            with open(source, "rb") as data:
                tar.add(info, data)
    tar.close()


async def _published(result: BuildResult, opts: CommitOptions, info: ExportInfo) -> Published:
    """The image, with the steps BuildKit's image exporters show while making it."""
    info.progress.status("exporting layers")
    published = await publish(result, opts, info.inline_cache)
    info.progress.status("exporting layers", done=True)
    for _, image in published.images:
        for what, digest in (("manifest", image.manifest_digest), ("config", image.config_digest)):
            info.progress.status(f"exporting {what} {digest}", done=True)
    if published.is_index:
        info.progress.status(f"exporting manifest list {published.digest}", done=True)
    return published


def _warn_no_effect(attrs: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(k for k in NO_EFFECT if k in attrs)


@dataclass
class TarballJob:
    name: str
    dest: str
    tar: bool
    opts: CommitOptions
    docker: bool
    no_effect: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return f"exporting to {'docker' if self.docker else 'oci'} image format"

    @property
    def blobs_only(self) -> bool:
        """An archive of the layers' blobs: an image only exported need not be unpacked."""
        return True

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        for key in self.no_effect:
            info.progress.warn(f"exporter option {key} has no effect in this release of llbkit")
        client = info.client
        if self.docker and result.is_map:
            raise ConfigError(
                "docker exporter does not currently support exporting manifest lists (a docker "
                "tarball holds one platform; use type=oci)"
            )
        published = await _published(result, self.opts, info)
        # The time the image configs hold, so index.json's created annotation agrees with them.
        moment = published.created
        files = await _fetched(
            _layout_files(published, self.opts, self.docker, created_text(moment), tarball=self.tar)
        )
        if not self.tar:
            with tempfile.TemporaryDirectory() as tmp:
                await anyio.to_thread.run_sync(_write_layout, files, Path(tmp))
                await client.write_tree(self.dest, Path(tmp))
            return response(published, self._names(), self.opts, dated=True)
        if self.dest != "-" and os.path.isdir(self.dest):
            raise ConfigError(
                f"exporter {self.name}: dest={self.dest} is a directory; "
                "give a file name (or tar=false to write an OCI layout there)"
            )
        if self.dest == "-":
            # Standard output cannot take back half an archive: made whole first, then sent.
            with tempfile.TemporaryFile() as spool:
                await anyio.to_thread.run_sync(_write_tar, files, spool)
                spool.seek(0)
                info.progress.status("sending tarball")
                async with client.open_output(self.dest) as out:
                    while chunk := spool.read(1 << 20):
                        await out.write(chunk)
        else:
            # A file appears whole or not at all (the client's promise): written as it is made.
            info.progress.status("sending tarball")
            async with client.open_output(self.dest) as out:
                writer = _SinkWriter(out)
                await anyio.to_thread.run_sync(_write_tar, files, writer)
                await out.write(bytes(writer.buffer))  # what the last piece left
        info.progress.status("sending tarball", done=True)
        return response(published, self._names(), self.opts, dated=True)

    def _names(self) -> list[str]:
        """The names as an archive's metadata gives them, as BuildKit's: normalized, tagged
        (``app`` is ``docker.io/library/app:latest``)."""
        return [str(parse_reference(name)) for name in self.opts.names]

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


class _TarballExporter:
    api_version: ClassVar[int] = 2
    docker: ClassVar[bool] = False

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> TarballJob:
        _check(self.ctx, attrs)
        opts = CommitOptions.parse(attrs, oci_default=not self.docker)
        tar = _bool("tar", attrs, True)
        return TarballJob(
            self.ctx.name, attrs["dest"], tar, opts, self.docker, _warn_no_effect(attrs)
        )


class OCIExporter(_TarballExporter):
    """``type=oci``: an OCI image layout tarball."""


class DockerExporter(_TarballExporter):
    """``type=docker``: a tarball ``docker load`` takes."""

    docker = True


IMAGE_OPTIONS = (
    *tuple(o for o in OPTIONS if o not in ("dest", "tar")),
    "push",
    "push-by-digest",
    "registry.insecure",
)


@dataclass
class ImageJob:
    opts: CommitOptions
    push: bool
    by_digest: bool
    insecure: bool
    canonical: bool
    registries: Registries | None
    no_effect: tuple[str, ...] = ()
    #: ``store``: also into the worker's image store, where the worker has one (containerd's)
    store: bool = True
    #: ``unpack``: and unpack it there with the worker's snapshotter (so it runs at once)
    unpack: bool = False
    _published: Published | None = field(default=None, repr=False)
    description: str = "exporting to image"

    @property
    def blobs_only(self) -> bool:
        """Pushed or stored as the layers' blobs (a worker's image store unpacks its own)."""
        return True

    async def export(self, result: BuildResult, info: ExportInfo) -> Mapping[str, str]:
        for key in self.no_effect:
            info.progress.warn(f"exporter option {key} has no effect in this release of llbkit")
        published = self._published = await _published(result, self.opts, info)
        names = list(self.opts.names)
        stored = False
        if self.store and info.image_store is not None:
            store = await info.image_store()
            if store is not None:
                await _store(store, published, names, info)
                stored = True
                for name in names if self.unpack else ():  # as BuildKit: per name it stored
                    await _unpack(store, published, str(parse_reference(name)), info)
        found = response(published, names, self.opts)
        if self.canonical and names and stored:
            # As BuildKit names images in its store: each name as given, then ``@digest``.
            found["image.name"] = ",".join([*names, *(f"{n}@{published.digest}" for n in names)])
        return found

    async def finalize(self, info: ExportInfo) -> Mapping[str, str]:
        """Push, once every exporter and cache exporter has run (as BuildKit orders it)."""
        if not self.push or self._published is None:
            return {}
        if not self.opts.names:
            # As BuildKit: nothing is named, so nothing is pushed (and the build succeeds).
            info.progress.warn("exporter image: push=true without name= pushes nothing")
            return {}
        if self.registries is None:
            raise ConfigError("exporter image: this engine gives no registry access to push")
        published = self._published
        for name in self.opts.names:
            if self.by_digest and ":" in name.rsplit("/", 1)[-1].split("@", 1)[0]:  # a tag
                raise UserError(f"failed to push {name}: can't push tagged ref {name} by digest")
            try:
                async with self.registries.session(name, push=True, insecure=self.insecure) as repo:
                    await _push(repo, published, name, info, by_digest=self.by_digest)
            except UserError as err:
                raise UserError(f"failed to push {name}: {_cause(err, name)}") from None
        return {}

    async def aclose(self) -> None:
        self._published = None


async def _store(
    store: ImageStore, published: Published, names: list[str], info: ExportInfo
) -> None:
    """Write the image into the worker's store (children before parents), then name it."""
    progress = f"storing in {store.name}"
    info.progress.status(progress)

    async def put(desc: Mapping[str, Any], data: BlobSource, children: list[str]) -> None:
        if not children and await store.hold_blob(desc["digest"]):
            # A layer or config there already, now held until the image names it (a
            # manifest is written for its labels).
            return
        await store.write_blob(
            desc["digest"],
            _blob_chunks(data),
            size=int(desc["size"]),
            media_type=str(desc.get("mediaType", "")),
            children=children,
        )

    for _, image in published.images:
        manifest = json.loads(image.manifest)
        sources = {d: src for d, _, src in image.layers}
        for layer in manifest["layers"]:
            await put(layer, sources[layer["digest"]], [])
        await put(manifest["config"], image.config, [])
        layers = [layer["digest"] for layer in manifest["layers"]]
        children = [manifest["config"]["digest"], *layers]
        await put(image.descriptor(), image.manifest, children)
    if published.is_index:
        children = [image.manifest_digest for _, image in published.images]
        await put(published.descriptor(), published.data, children)
    top = published.descriptor()
    for name in names:
        ref = parse_reference(name)
        await store.name_image(
            str(ref), digest=top["digest"], size=int(top["size"]), media_type=top["mediaType"]
        )
        info.progress.status(f"naming to {ref}", done=True)
    info.progress.status(progress, done=True)


async def _unpack(store: ImageStore, published: Published, name: str, info: ExportInfo) -> None:
    """Unpack the image for this machine's platform into the store's snapshotter, as
    BuildKit's ``unpack=true`` does; an image of several platforms must have this one."""
    from llbkit.core.plugins.context import Platform

    here = str(Platform())
    chosen = next((img for p, img in published.images if p == here), None)
    if chosen is None:
        if published.is_index:
            raise ConfigError(f"exporter image: unpack: no reference for default platform {here}")
        chosen = published.images[0][1]
    progress = f"unpacking to {name}"
    info.progress.status(progress)
    await store.unpack(chosen.manifest_digest)
    info.progress.status(progress, done=True)


async def _blob_chunks(source: BlobSource) -> AsyncIterator[bytes]:
    data = await blob_file(source)
    if isinstance(data, bytes):
        yield data
        return
    async with await anyio.open_file(data, "rb") as handle:
        while chunk := await handle.read(1 << 20):
            yield chunk


def _cause(err: UserError, name: str) -> str:
    """The registry's message without the image name it starts with (said once already)."""
    text = str(err)
    return text.removeprefix(f"{name}: ")


async def _push(
    repo: RegistrySession, published: Published, name: str, info: ExportInfo, *, by_digest: bool
) -> None:
    """Upload the image's blobs the registry lacks, then its manifest (tag or digest)."""
    ref = parse_reference(name)
    blobs = [
        (d, src)
        for _, image in published.images
        for d, src in [
            (image.config_digest, image.config),
            *((d, s) for d, _, s in image.layers),
        ]
    ]
    info.progress.status("pushing layers")
    for digest, source in blobs:
        if await repo.has_blob(digest):
            continue  # the registry has it (from an earlier push or another image)
        if await _mounted(repo, ref, digest, published.sources.get(digest, [])):
            continue  # linked from the repository it was pulled from
        data = await blob_file(source)  # only now: an imported layer downloads here
        if isinstance(data, bytes):
            await repo.push_bytes(digest, data)
        else:
            await repo.push_blob(digest, data)
    info.progress.status("pushing layers", done=True)
    pushing = f"pushing manifest for {name}@{published.digest}"
    info.progress.status(pushing)
    if published.is_index:
        # Each platform's manifest by digest first, then the index under the tag.
        for _, image in published.images:
            await repo.push_manifest(image.manifest_digest, image.manifest, image.media_type)
    reference = published.digest if by_digest else (ref.tag or "latest")
    await repo.push_manifest(reference, published.data, published.media_type)
    info.progress.status(pushing, done=True)


async def _mounted(
    repo: RegistrySession, ref: Reference, digest: str, sources: list[tuple[str, str]]
) -> bool:
    for host, path in sources:
        if host == ref.domain and path != ref.path and await repo.mount_blob(digest, path):
            return True
    return False


class ImageExporter:
    """``type=image``: the image, pushed to a registry with ``push=true``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> ImageJob:
        for key in attrs:
            if key not in IMAGE_OPTIONS and not ANNOTATION_KEY.match(key):
                raise UnknownOptionError(
                    f"exporter {self.ctx.name}",
                    key,
                    (*IMAGE_OPTIONS, *(p + "<key>" for p in PREFIXES)),
                )
        opts = CommitOptions.parse(attrs, oci_default=False)
        push = _bool("push", attrs, False)
        return ImageJob(
            opts,
            push,
            _bool("push-by-digest", attrs, False),
            _bool("registry.insecure", attrs, False),
            _bool("name-canonical", attrs, False),
            self.ctx.registries,
            tuple(k for k in _warn_no_effect(attrs) if k not in ("store", "unpack")),
            _bool("store", attrs, True),
            _bool("unpack", attrs, False),
        )
