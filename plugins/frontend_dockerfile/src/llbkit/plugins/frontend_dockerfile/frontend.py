"""``--frontend dockerfile.v0``: read the Dockerfile and .dockerignore through the engine, return
LLB and the image config."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import anyio

from llbkit.core.errors import ConfigError, UnknownOptionError, UserError, one_error
from llbkit.core.patterns import read_dockerignore
from llbkit.core.plugins import FrontendClient, FrontendOutput, Platform, PluginContext
from llbkit.core.plugins.source import ResolveMode
from llbkit.plugins.frontend_dockerfile.convert import (
    BuildOptions,
    IgnoreReader,
    ImageResolver,
    convert,
    exports_map,
    platform_fields,
    platform_key,
)
from llbkit.plugins.frontend_dockerfile.options import (
    go_int64,
    parse_extra_hosts,
    parse_platforms,
    parse_resolve_mode,
    parse_ulimits,
)
from llbkit.plugins.frontend_dockerfile.parser import Parsed, detect_syntax, parse
from llbkit.plugins.frontend_dockerfile.remote import (
    git_context,
    http_download,
    is_archive,
    parse_git_ref,
    remote_context,
    unpacked,
)
from llbkit.sdk import llb

OPTIONS = (
    "filename",
    "target",
    "platform",
    "no-cache",
    "contextkey",
    "dockerfilekey",
    "image-resolve-mode",
    "multi-platform",
    "add-hosts",
    "force-network-mode",
    "cgroup-parent",
    "shm-size",
    "ulimit",
    "hostname",
    "contextsubdir",
)
PREFIXES = ("build-arg:", "label:", "context:", "attest:")
#: what clients send that BuildKit's frontend reads elsewhere or not at all: taken, unsaid
#: (buildx's ``vcs:source``... for provenance, buildctl's ``cache-imports``); any other key
#: is refused by name, where BuildKit ignores it
PASSED = ("vcs:", "input-metadata:", "attest:", "cache-from", "cache-imports", "requestid")
PASSED += ("frontend.caps", "cmdline")
#: BuildKit options accepted so builds move over unchanged, but without effect here yet
NO_EFFECT: tuple[str, ...] = ()


@dataclass(frozen=True)
class DockerfileJob:
    options: BuildOptions
    dockerfile_key: str = "dockerfile"
    context_key: str = "context"
    #: options given that have no effect in this release (said as a warning, not ignored)
    no_effect: tuple[str, ...] = ()
    #: a Git repository or HTTP URL the context is (``--opt context=``), else ""
    remote: str = ""
    #: the Dockerfile from the client's directory even with a remote context (``dockerfilekey``
    #: given)
    local_dockerfile: bool = False
    #: a remote context's ``.git`` kept (``BUILDKIT_CONTEXT_KEEP_GIT_DIR``)
    keep_git_dir: bool = False
    #: the folder of a remote context that is the context (``contextsubdir``)
    subdir: str = ""

    async def _read_remote(self, client: FrontendClient) -> tuple[bytes, bytes | None, Parsed]:
        """A remote context, made as BuildKit makes it: a repository's checkout, or an
        archive downloaded and unpacked, holds the Dockerfile and its ignore files (unless
        the Dockerfile is the client's); a download that is no archive is the Dockerfile
        itself (``context``), and no ignore file is read."""
        name = self.options.filename
        tree = True
        if remote_context(self.remote) == "git":
            ref = parse_git_ref(self.remote)
            assert ref is not None
            context = git_context(ref, self.remote, self.keep_git_dir)
        else:
            download = http_download(self.remote)
            try:
                fetched = await client.solve(download.marshal().to_bytes())
                head = await client.read_ref_file(fetched, "context", length=1024)
            except UserError as err:
                raise UserError(f"failed to read downloaded context: {_cause(err)}") from None
            tree = is_archive(head)
            context = unpacked(download) if tree else download
            name = name if tree else "context"
        # The Dockerfile is read from the whole tree; contextsubdir scopes the context alone.
        source, context = context, _scoped(context, self.subdir)
        self.options.context_state = context
        # A download that is no archive is read as the Dockerfile ``context``, even from the
        # client's directory when the Dockerfile is the client's (where it is not), as BuildKit
        # reads it.
        self.options.filename = name
        if self.local_dockerfile:
            data, beside, parsed = await self._read_sources(client, read_context_ignore=False)
        else:
            data, beside, parsed = await self._read_tree(client, source, name)
        if not tree:
            return data, beside, parsed
        # The context's own ignore file is read whatever is beside the Dockerfile (which wins),
        # as BuildKit reads both at once.
        in_context: bytes | None = None
        with contextlib.suppress(UserError):
            found = await client.solve(context.marshal().to_bytes())
            in_context = await client.read_ref_file(found, ".dockerignore")
        return data, beside if beside is not None else in_context, parsed

    async def _read_inputs(self, client: FrontendClient) -> tuple[bytes, bytes | None, Parsed]:
        """The context, the Dockerfile or both from definitions the client passed (``context``,
        ``dockerfile``), as BuildKit takes them: an input context's own ignore file is not
        read; a Dockerfile read from the client's directory is still that one's."""
        inputs = self.options.inputs
        if "context" in inputs:
            self.options.context_state = _scoped(
                llb.from_definition(inputs["context"]), self.subdir
            )
        if "dockerfile" in inputs and not self.local_dockerfile:
            data, beside, parsed = await self._read_tree(
                client, llb.from_definition(inputs["dockerfile"]), self.options.filename
            )
            if "context" in inputs:
                return data, beside, parsed
            # The context is the client's directory: its own ignore file is read too, as
            # BuildKit reads it (the one beside the Dockerfile wins).
            local = await self._local_context_ignore(client)
            return data, beside if beside is not None else local, parsed
        return await self._read_sources(client, read_context_ignore="context" not in inputs)

    async def _read_tree(
        self, client: FrontendClient, tree: llb.State, name: str
    ) -> tuple[bytes, bytes | None, Parsed]:
        """The Dockerfile ``name`` of a solved ``tree`` (``dockerfile`` for a ``Dockerfile``
        that is not there) parsed, and the ignore file beside it (None when there is none)."""
        try:
            found = await client.solve(tree.marshal().to_bytes())
        except UserError as err:
            raise UserError(f"failed to read dockerfile: {_cause(err)}") from None
        data: bytes | None = None
        for wanted in _dockerfile_names(name):
            try:
                data = await client.read_ref_file(found, wanted)
                break
            except UserError:
                continue
        if data is None:
            raise _missing(name)
        try:
            beside: bytes | None = await client.read_ref_file(found, f"{name}.dockerignore")
        except UserError:
            beside = None
        text = data.decode("utf-8", "replace")
        if not text:
            raise UserError("the Dockerfile cannot be empty")
        parsed = parse(text, name)
        for warning in parsed.warnings:
            client.warn(warning.message, detail=warning.detail, url=warning.url)
        self.options.filename = name
        return data, beside, parsed

    async def _local_context_ignore(self, client: FrontendClient) -> bytes | None:
        """The client's context's ``.dockerignore``, in a step of its own; None when there is
        none, or the client does not share the context (which fails this step, not the
        build: a build may never read its context), as BuildKit's frontend ignores that."""
        with contextlib.suppress(UserError):
            return await _ignore_file(client, self.context_key, "[internal] load .dockerignore")
        return None

    async def _read_sources(
        self, client: FrontendClient, *, read_context_ignore: bool = True
    ) -> tuple[bytes, bytes | None, Parsed]:
        """The Dockerfile and its ignore file, read at once as BuildKit reads them (through a
        daemon each read is a round trip to the client), and the Dockerfile parsed: what the
        parser warns of shows under the step that read it, as BuildKit shows it.

        As BuildKit's, the build definition is the Dockerfile (``dockerfile`` when a
        ``Dockerfile`` is asked for and missing) and the ignore file beside it
        (``<filename>.dockerignore``), which wins over the context's ``.dockerignore``; that
        one is read in a step of its own, begun first."""
        in_context: bytes | None = None
        name = self.options.filename

        async def context_ignore() -> None:
            nonlocal in_context
            in_context = await self._local_context_ignore(client)

        with one_error():
            async with anyio.create_task_group() as reads:
                if read_context_ignore:
                    reads.start_soon(context_ignore)
                await anyio.lowlevel.checkpoint()
                async with client.step(f"[internal] load build definition from {name}") as step:
                    names = _dockerfile_names(name)
                    wanted = [name, f"{name}.dockerignore", *names[1:]]
                    crossed: list[int] = []
                    try:
                        got = await client.read_files(
                            self.dockerfile_key, wanted, progress=crossed.append
                        )
                    except UserError as err:
                        raise UserError(f"failed to read dockerfile: {err}") from None
                    data = next((got[n] for n in names if n in got), None)
                    beside = got.get(f"{name}.dockerignore")
                    moved = crossed[-1] if crossed else len(data or b"") + len(beside or b"")
                    step.status(f"transferring {self.dockerfile_key}:", current=moved, done=True)
                    # A Dockerfile that is not there fails the build after this step, which
                    # read the folder and is done, as BuildKit's is.
                    failed: UserError | None = _missing(name) if data is None else None
                    parsed: Parsed | None = None
                    text = (data or b"").decode("utf-8", "replace")
                    try:
                        parsed = parse(text, name) if failed is None and text else None
                    except UserError as err:
                        failed = err  # the Dockerfile's fault, not the read's: the step is done
                    else:
                        for warning in parsed.warnings if parsed is not None else ():
                            step.warn(warning.message, detail=warning.detail, url=warning.url)
        if failed is not None:
            raise failed
        if parsed is None or data is None:
            raise UserError("the Dockerfile cannot be empty")
        return data, beside if beside is not None else in_context, parsed

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        for key in self.no_effect:
            client.warn(f"frontend option {key} has no effect in this release of llbkit")
        self.options.inputs = client.inputs()
        if self.remote:
            data, ignore, parsed = await self._read_remote(client)
        elif {"context", "dockerfile"} & set(self.options.inputs):
            data, ignore, parsed = await self._read_inputs(client)
        else:
            data, ignore, parsed = await self._read_sources(client)
        if self.subdir and self.options.context_state is None:
            client.warn(
                "frontend option contextsubdir scopes a Git, HTTP or input context: the "
                "client's directory is the context here, whole"
            )
        text = data.decode("utf-8", "replace")
        self.options.dockerignore = read_dockerignore((ignore or b"").decode("utf-8", "replace"))
        self.options.context_key = self.context_key
        syntax = detect_syntax(text)
        if syntax:
            client.warn(
                f"# syntax={syntax} is not followed: the built-in "
                "dockerfile.v0 frontend builds this Dockerfile"
            )
        platforms = self.options.platforms or [self.options.platform]
        several = exports_map(self.options)
        definitions: dict[str, bytes] = {}
        metadata: dict[str, bytes] = {}
        for platform in platforms:
            options = dataclasses.replace(self.options, platform=platform)
            # convert reads the parsed instructions without changing them: one parse serves all.
            resolver = _resolver(client, several, options.resolve_mode)
            converted = await convert(parsed, options, resolver, _ignore_reader(client))
            if platform == platforms[0]:
                for warning in converted.warnings:
                    client.warn(warning)
            key = platform_key(platform)
            # scratch has no definition: the result is its config alone, as BuildKit's nil ref
            state = converted.state
            definitions[key] = b"" if state.output is None else state.marshal(platform).to_bytes()
            config = json.dumps(converted.config).encode()
            if not several:
                metadata["containerimage.config"] = config
            else:
                metadata[f"containerimage.config/{key}"] = config
        if several:
            metadata["refs.platforms"] = json.dumps(
                {
                    "Platforms": [
                        {"ID": platform_key(p), "Platform": platform_fields(p)} for p in platforms
                    ]
                }
            ).encode()
        epoch = self.options.build_args.get("SOURCE_DATE_EPOCH")
        if epoch:
            metadata["llbkit.source-date-epoch"] = epoch.encode()
        return FrontendOutput(definitions, metadata)


def _scoped(context: llb.State, subdir: str) -> llb.State:
    """A context that is not the client's directory scoped to its folder ``subdir``
    (``contextsubdir``), as BuildKit scopes one: the folder's contents copied onto scratch."""
    if not subdir:
        return context
    return llb.scratch().file(llb.copy(context, subdir, "/", copy_dir_contents=True))


def _dockerfile_names(name: str) -> list[str]:
    """Where the Dockerfile ``name`` is read from, in turn: itself, and for a ``Dockerfile``
    the other spelling Docker has always accepted, ``dockerfile`` (moby/moby#10858)."""
    folder, _, base = name.rpartition("/")
    if base != "Dockerfile":
        return [name]
    return [name, f"{folder}/dockerfile" if folder else "dockerfile"]


def _cause(err: UserError) -> str:
    """Why a solve of the frontend's own failed, without the build's ``failed to solve: ``."""
    return str(err).removeprefix("failed to solve: ")


def _missing(name: str) -> UserError:
    """BuildKit's words for a Dockerfile that is not there, the path cleaned as it cleans it."""
    where = posixpath.normpath("/" + name).lstrip("/")
    return UserError(f"failed to read dockerfile: open {where}: no such file or directory")


def _resolver(
    client: FrontendClient, several: bool = False, mode: ResolveMode = "default"
) -> ImageResolver:
    """``FROM`` images through the engine's image resolver, by the build's platform (named
    in the step, as BuildKit names it, when the build is for ``several``), in the build's
    resolve ``mode``; ``step``: the step's own name (a named context's)."""

    known: dict[tuple[str, llb.Platform, str], tuple[str, bytes]] = {}

    async def resolve(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
        # Each image once, as BuildKit's frontend asks (and shows it) once per build: by its
        # normalized name, so "busybox" and "busybox:latest" are one.
        name = _full_name(ref)
        if (name, platform, step) in known:
            return known[name, platform, step]
        wanted = Platform(platform.os, platform.architecture, platform.variant)
        # One step per platform, as BuildKit shows an image resolved for two (the same name).
        key = platform_key(platform)
        label = f"[{key} internal]" if several else "[internal]"
        async with client.step(step or f"{label} load metadata for {name}", key):
            found = await client.images.resolve_image_config(ref, wanted, mode)
        known[name, platform, step] = found.digest, found.config
        return known[name, platform, step]

    return resolve


async def _ignore_file(client: FrontendClient, directory: str, step: str) -> bytes | None:
    """The ``.dockerignore`` of the client's ``directory`` (None when it has none), read in a
    step named ``step``, which shows what crossed from the client as BuildKit shows it (the
    file's size when nothing crossed: an embedded build); UserError if it is not shared."""
    async with client.step(step) as shown:
        crossed: list[int] = []
        got = await client.read_files(directory, [".dockerignore"], progress=crossed.append)
        found = got.get(".dockerignore")
        moved = crossed[-1] if crossed else len(found or b"")
        shown.status(f"transferring {directory}:", current=moved, done=True)
    return found


def _ignore_reader(client: FrontendClient) -> IgnoreReader:
    """A local named context's ``.dockerignore`` (b"" when it has none), read in a step of its
    own as BuildKit reads it; a directory the client does not share fails the build."""

    async def read(directory: str, step: str) -> bytes:
        return await _ignore_file(client, directory, step) or b""

    return read


def _full_name(ref: str) -> str:
    """A reference as BuildKit names it in ``load metadata for``: normalized, tagged."""
    from llbkit.core.reference import ReferenceError, parse_reference

    try:
        return str(parse_reference(ref))
    except ReferenceError:
        return ref


#: what Go's ``strconv.ParseBool`` takes
_GO_BOOLS = ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")


def _go_bool(text: str) -> bool:
    """``strconv.ParseBool``'s true (anything else, an error there, is false here too)."""
    return text in ("1", "t", "T", "TRUE", "true", "True")


class DockerfileFrontend:
    """``llbkit.frontends: dockerfile.v0``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> DockerfileJob:
        options = BuildOptions()
        for key, value in attrs.items():
            if key.startswith("build-arg:"):
                options.build_args[key[len("build-arg:") :]] = value
            elif key.startswith("label:"):
                options.labels[key[len("label:") :]] = value
            elif key.startswith("context:"):
                options.contexts[key[len("context:") :]] = value
            elif key.startswith("input-metadata:"):
                options.input_metadata[key[len("input-metadata:") :]] = value
            elif key.startswith(PASSED) or key in (*PASSED, "context"):
                continue
            elif key not in OPTIONS:
                raise UnknownOptionError(
                    "frontend dockerfile.v0", key, (*OPTIONS, *(p + "<name>" for p in PREFIXES))
                )
        options.filename = attrs.get("filename") or "Dockerfile"
        options.target = attrs.get("target", "")
        # In BuildKit's order, so that the first bad value is the one refused.
        if _go_bool(options.build_args.get("BUILDKIT_DISABLE_FILEOP", "")):
            raise ConfigError(
                'support for "build-arg:BUILDKIT_DISABLE_FILEOP" was removed in BuildKit 0.11'
            )
        if attrs.get("platform"):
            options.platforms = parse_platforms(attrs["platform"])
            options.platform = options.platforms[0]
        # The build arg wins over the option, as in BuildKit, and is read only if set.
        multi = options.build_args.get("BUILDKIT_MULTI_PLATFORM") or attrs.get("multi-platform")
        if multi:
            if multi not in _GO_BOOLS:
                raise ConfigError(f"invalid boolean value {multi}")
            options.multi_platform = _go_bool(multi)
            if not options.multi_platform and len(options.platforms) > 1:
                raise ConfigError("returning multiple target platforms is not allowed")
        options.resolve_mode = parse_resolve_mode(attrs.get("image-resolve-mode", ""))
        options.extra_hosts = parse_extra_hosts(attrs.get("add-hosts", ""))
        try:
            options.shm_size = go_int64(attrs["shm-size"]) if attrs.get("shm-size") else 0
        except ValueError as err:
            raise ConfigError(f"failed to parse shm size: {err}") from None
        options.ulimits = parse_ulimits(attrs.get("ulimit", ""))
        network = attrs.get("force-network-mode", "")
        if network not in ("", "none", "host", "sandbox"):
            raise ConfigError(f"invalid netmode {network}")
        options.network = "" if network == "sandbox" else network
        options.no_cache = "no-cache" in attrs
        # BuildKit's build arg for the containers' host name wins over the option.
        options.hostname = options.build_args.get("BUILDKIT_SANDBOX_HOSTNAME") or attrs.get(
            "hostname", ""
        )
        options.cgroup_parent = attrs.get("cgroup-parent", "")
        context_key = attrs.get("contextkey") or "context"
        # The option the context key names (``context``) may name a remote context instead.
        remote = attrs.get(context_key, "")
        remote = remote if remote_context(remote) else ""
        return DockerfileJob(
            options,
            attrs.get("dockerfilekey") or "dockerfile",
            context_key,
            tuple(k for k in attrs if k in NO_EFFECT or k.startswith("attest:")),
            remote=remote,
            local_dockerfile="dockerfilekey" in attrs,
            keep_git_dir=_go_bool(options.build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "")),
            subdir=attrs.get("contextsubdir", ""),
        )
