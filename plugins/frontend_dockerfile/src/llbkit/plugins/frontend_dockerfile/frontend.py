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
from llbkit.plugins.frontend_dockerfile.convert import (
    BuildOptions,
    IgnoreReader,
    ImageResolver,
    convert,
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
NO_EFFECT = ("image-resolve-mode", "contextsubdir")


@dataclass(frozen=True)
class DockerfileJob:
    options: BuildOptions
    dockerfile_key: str = "dockerfile"
    context_key: str = "context"
    #: options given that have no effect in this release (said as a warning, not ignored)
    no_effect: tuple[str, ...] = ()

    async def _read_sources(self, client: FrontendClient) -> tuple[bytes, bytes, Parsed]:
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
            # A context the client does not share fails this step, not the build (a build
            # may never read its context), as BuildKit's frontend ignores that failure.
            with contextlib.suppress(UserError):
                async with client.step("[internal] load .dockerignore") as step:
                    crossed: list[int] = []
                    got = await client.read_files(
                        self.context_key, [".dockerignore"], progress=crossed.append
                    )
                    in_context = got.get(".dockerignore")
                    # What crossed from the client, as BuildKit shows it; the file's size
                    # when nothing crossed (an embedded build).
                    moved = crossed[-1] if crossed else len(in_context or b"")
                    step.status(f"transferring {self.context_key}:", current=moved, done=True)

        with one_error():
            async with anyio.create_task_group() as reads:
                reads.start_soon(context_ignore)
                await anyio.lowlevel.checkpoint()
                async with client.step(f"[internal] load build definition from {name}") as step:
                    folder, _, base = name.rpartition("/")
                    # The other spelling Docker has always accepted (moby/moby#10858).
                    lower = f"{folder}/dockerfile" if folder else "dockerfile"
                    wanted = [name, f"{name}.dockerignore"]
                    wanted += [lower] if base == "Dockerfile" else []
                    crossed: list[int] = []
                    try:
                        got = await client.read_files(
                            self.dockerfile_key, wanted, progress=crossed.append
                        )
                    except UserError as err:
                        raise UserError(f"failed to read dockerfile: {err}") from None
                    data = got.get(name, got.get(lower) if base == "Dockerfile" else None)
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
        ignore = beside if beside is not None else in_context
        return data, ignore or b"", parsed

    async def solve(self, client: FrontendClient) -> FrontendOutput:
        for key in self.no_effect:
            client.warn(f"frontend option {key} has no effect in this release of llbkit")
        data, ignore, parsed = await self._read_sources(client)
        text = data.decode("utf-8", "replace")
        self.options.dockerignore = read_dockerignore(ignore.decode("utf-8", "replace"))
        self.options.context_key = self.context_key
        syntax = detect_syntax(text)
        if syntax:
            client.warn(
                f"# syntax={syntax} is not followed: the built-in "
                "dockerfile.v0 frontend builds this Dockerfile"
            )
        platforms = self.options.platforms or [self.options.platform]
        definitions: dict[str, bytes] = {}
        metadata: dict[str, bytes] = {}
        for platform in platforms:
            options = dataclasses.replace(self.options, platform=platform)
            # convert reads the parsed instructions without changing them: one parse serves all.
            converted = await convert(
                parsed, options, _resolver(client, len(platforms) > 1), _ignore_reader(client)
            )
            if platform == platforms[0]:
                for warning in converted.warnings:
                    client.warn(warning)
            key = platform_key(platform)
            # scratch has no definition: the result is its config alone, as BuildKit's nil ref
            state = converted.state
            definitions[key] = b"" if state.output is None else state.marshal(platform).to_bytes()
            config = json.dumps(converted.config).encode()
            if len(platforms) == 1:
                metadata["containerimage.config"] = config
            else:
                metadata[f"containerimage.config/{key}"] = config
        if len(platforms) > 1:
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


def _missing(name: str) -> UserError:
    """BuildKit's words for a Dockerfile that is not there, the path cleaned as it cleans it."""
    where = posixpath.normpath("/" + name).lstrip("/")
    return UserError(f"failed to read dockerfile: open {where}: no such file or directory")


def _resolver(client: FrontendClient, several: bool = False) -> ImageResolver:
    """``FROM`` images through the engine's image resolver, by the build's platform (named
    in the step, as BuildKit names it, when the build is for ``several``); ``step``: the
    step's own name (a named context's)."""

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
            found = await client.images.resolve_image_config(ref, wanted)
        known[name, platform, step] = found.digest, found.config
        return known[name, platform, step]

    return resolve


def _ignore_reader(client: FrontendClient) -> IgnoreReader:
    """A local named context's ``.dockerignore`` (b"" when it has none), read in a step of its
    own as BuildKit reads it; a directory the client does not share fails the build."""

    async def read(directory: str, step: str) -> bytes:
        async with client.step(step) as shown:
            crossed: list[int] = []
            got = await client.read_files(directory, [".dockerignore"], progress=crossed.append)
            found = got.get(".dockerignore", b"")
            shown.status(
                f"transferring {directory}:",
                current=crossed[-1] if crossed else len(found),
                done=True,
            )
        return found

    return read


def _full_name(ref: str) -> str:
    """A reference as BuildKit names it in ``load metadata for``: normalized, tagged."""
    from llbkit.core.reference import ReferenceError, parse_reference

    try:
        return str(parse_reference(ref))
    except ReferenceError:
        return ref


def _go_bool(text: str) -> bool:
    """``strconv.ParseBool``'s true (anything else, an error there, is false here too)."""
    return text in ("1", "t", "T", "TRUE", "true", "True")


class DockerfileFrontend:
    """``llbkit.frontends: dockerfile.v0``."""

    api_version: ClassVar[int] = 2

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def resolve(self, attrs: Mapping[str, str]) -> DockerfileJob:
        if attrs.get("context"):
            # BuildKit builds from that Git repository or URL: never the local context instead.
            raise ConfigError(
                f"frontend option context={attrs['context']}: a Git or HTTP build context is "
                "not supported yet (use --local context=<path>)"
            )
        options = BuildOptions()
        for key, value in attrs.items():
            if key.startswith("build-arg:"):
                options.build_args[key[len("build-arg:") :]] = value
            elif key.startswith("label:"):
                options.labels[key[len("label:") :]] = value
            elif key.startswith("context:"):
                options.contexts[key[len("context:") :]] = value
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
        parse_resolve_mode(attrs.get("image-resolve-mode", ""))
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
        return DockerfileJob(
            options,
            attrs.get("dockerfilekey") or "dockerfile",
            attrs.get("contextkey") or "context",
            tuple(k for k in attrs if k in NO_EFFECT or k.startswith("attest:")),
        )
