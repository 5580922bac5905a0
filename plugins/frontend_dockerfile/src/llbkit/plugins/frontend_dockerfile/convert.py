"""A parsed Dockerfile turned into LLB and an image config, instruction by instruction."""

from __future__ import annotations

import base64
import json
import posixpath
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import anyio

from llbkit.core.errors import UserError, source_block
from llbkit.core.known_platforms import parse_platform
from llbkit.core.llb import pb
from llbkit.core.patterns import clean, read_dockerignore
from llbkit.core.plugins.source import ResolveMode
from llbkit.plugins.frontend_dockerfile.config import (
    exposed_ports,
    go_duration,
    go_ports,
    go_quoted,
    go_value,
    image_config,
    parse_duration,
    parse_signal,
)
from llbkit.plugins.frontend_dockerfile.mountflags import (
    mount_key_error,
    mount_value_error,
    parse_bool,
    ram_in_bytes,
)
from llbkit.plugins.frontend_dockerfile.parser import (
    DockerfileError,
    Instruction,
    Parsed,
    chomp,
    parse_heredoc,
    unknown_instruction,
)
from llbkit.plugins.frontend_dockerfile.remote import git_context, parse_git_ref
from llbkit.plugins.frontend_dockerfile.shell import (
    ExpansionError,
    ExpansionLimitError,
    expand,
    expand_heredoc,
    expand_words,
)
from llbkit.plugins.frontend_dockerfile.suggest import COMMON_IMAGES, hint
from llbkit.sdk import llb
from llbkit.sdk.llb.source import SourceOp

__all__ = ["BuildOptions", "Converted", "convert"]

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WINDOWS_PATH = "c:\\Windows\\System32;c:\\Windows"
#: build args Docker predefines (the proxies, in any case), which need no ARG
PROXIES = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
# What variable expansion may make in one Dockerfile, all words and RUN environments together.
MAX_EXPANDED = 32 << 20
#: the step that writes a heredoc's file, named as BuildKit names it
INLINE_DOCUMENT = "[internal] preparing inline document"
#: ``(ref, platform, step)``: an image's digest and config; ``step`` names the step shown
#: (a named context's), "" for the frontend's own ``load metadata for``
ImageResolver = Callable[[str, llb.Platform, str], Awaitable[tuple[str, bytes]]]
#: ``(directory, step)``: the ``.dockerignore`` of a local directory the client shares (b""
#: when it has none), read in a step of that name
IgnoreReader = Callable[[str, str], Awaitable[bytes]]


async def _no_ignore_files(directory: str, step: str) -> bytes:
    return b""


@dataclass
class BuildOptions:
    """What ``--opt`` gives the frontend."""

    filename: str = "Dockerfile"
    target: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    platform: llb.Platform = field(default_factory=lambda: llb.Platform("linux", "amd64"))
    #: every target platform (``--opt platform=a,b``); ``platform`` is the one being converted
    platforms: list[llb.Platform] = field(default_factory=list)
    #: ``multi-platform`` (or ``BUILDKIT_MULTI_PLATFORM``): the result a map of platforms
    #: even for one; None: when there are several
    multi_platform: bool | None = None
    build_platform: llb.Platform = field(default_factory=lambda: llb.Platform("linux", "amd64"))
    no_cache: bool = False
    dockerignore: list[str] = field(default_factory=list)
    contexts: dict[str, str] = field(default_factory=dict)
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)
    network: str = ""
    hostname: str = ""
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)
    cgroup_parent: str = ""
    #: the size of every RUN's ``/dev/shm`` (``shm-size``), in bytes; 0: the worker's own
    shm_size: int = 0
    #: the client directory the build context is read from (``--opt contextkey=``)
    context_key: str = "context"
    #: how images are resolved (``image-resolve-mode``, buildx's ``--pull``): ``default``,
    #: ``pull`` (ask the registry every time) or ``local`` (what is known, first)
    resolve_mode: ResolveMode = "default"
    #: the build context when it is not the client's directory (a Git checkout, a download)
    context_state: llb.State | None = None
    #: the definitions the client passed by name (``context:NAME=input:KEY``), and what it
    #: said of each (``input-metadata:KEY``, a JSON object of base64 values)
    inputs: Mapping[str, bytes] = field(default_factory=dict)
    input_metadata: dict[str, str] = field(default_factory=dict)


def exports_map(options: BuildOptions) -> bool:
    """Whether the build's result is a map of platforms (BuildKit's ``exportMap``), its
    steps named after their platforms: for several, or when ``multi-platform`` says so."""
    if options.multi_platform is not None:
        return options.multi_platform
    return len(options.platforms) > 1


@dataclass
class Converted:
    state: llb.State
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


#: the instructions BuildKit numbers as steps (with FROM an image)
_STEPS = frozenset({"ADD", "COPY", "RUN", "WORKDIR"})
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*$")
#: flags that take no value (``--link`` is ``--link=true``)
_BOOL_FLAGS = frozenset({"link", "keep-git-dir", "parents"})
#: flags that may be given more than once
_MULTI_FLAGS = frozenset({"mount", "exclude"})
#: the flags each instruction takes (BuildKit v0.11's, with llbkit's --exclude/--parents)
_FLAGS: dict[str, set[str]] = {
    "ADD": {"chown", "chmod", "link", "keep-git-dir", "checksum", "exclude", "parents"},
    "COPY": {"from", "chown", "chmod", "link", "exclude", "parents"},
    "RUN": {"mount", "network", "security"},
    "FROM": {"platform"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "retries"},
}
#: instructions whose one argument is required
_ONE_ARGUMENT = ("MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL")


@dataclass
class _Stage:
    index: int
    name: str
    base: str
    #: the platform ``FROM --platform`` names (None: the target's)
    platform: llb.Platform | None
    instructions: list[Instruction]
    state: llb.State | None = None
    #: the platform fields of the stage's image config (its base image's, or the target's)
    image_platform: dict[str, Any] = field(default_factory=dict)
    #: the platform BuildKit keeps for the stage once its base is known (an image's is the one
    #: it was resolved for, a stage's its parent's; None: the target's)
    effective: llb.Platform | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    cmd_set: bool = False
    declared: list[str] = field(default_factory=list)
    #: build args set after an ENV of the same name: BuildKit puts both in the state's
    #: environment, so the later one is what expansion and RUN see (not the image config)
    args_over_env: dict[str, str] = field(default_factory=dict)
    #: the stage's steps as BuildKit numbers them in progress (``[stage 2/4]``), and how many
    #: have been named
    steps: int = 0
    stepped: int = 0


def _proxy_env(build_args: Mapping[str, str]) -> pb.ProxyEnv | None:
    """Docker's predefined proxy build args, any case, for every RUN: BuildKit hands them to the
    process (not to the image, its history or the step's cache key)."""
    found = {}
    for key, value in build_args.items():
        name = key.lower()
        if name in PROXIES:
            found[name] = value
    if not found:
        return None
    return pb.ProxyEnv(
        http_proxy=found.get("http_proxy", ""),
        https_proxy=found.get("https_proxy", ""),
        ftp_proxy=found.get("ftp_proxy", ""),
        no_proxy=found.get("no_proxy", ""),
        all_proxy=found.get("all_proxy", ""),
    )


def platform_key(platform: llb.Platform) -> str:
    return f"{platform.os}/{platform.architecture}" + (
        f"/{platform.variant}" if platform.variant else ""
    )


def _platform_args(platform: llb.Platform, build: llb.Platform) -> dict[str, str]:
    return {
        "TARGETPLATFORM": platform_key(platform),
        "TARGETOS": platform.os,
        "TARGETARCH": platform.architecture,
        "TARGETVARIANT": platform.variant,
        "BUILDPLATFORM": platform_key(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
    }


class _Converter:
    def __init__(
        self,
        parsed: Parsed,
        options: BuildOptions,
        resolve: ImageResolver,
        read_ignore: IgnoreReader = _no_ignore_files,
    ) -> None:
        self.parsed = parsed
        self.options = options
        self.resolve = resolve
        self.read_ignore = read_ignore
        #: the exclude patterns of each local named context, by directory and context name
        self.local_ignores: dict[tuple[str, str], list[str]] = {}
        #: each stage's index to the indexes of the stages it needs (set by check_cycles)
        self.deps: dict[int, set[int]] = {}
        self.escape = parsed.escape
        self.filename = options.filename
        self.stages: list[_Stage] = []
        self.meta_args: dict[str, str] = dict(
            _platform_args(options.platform, options.build_platform)
        )
        self.context = options.context_state or llb.local(
            options.context_key,
            exclude_patterns=options.dockerignore,
            shared_key_hint=options.context_key,
            custom_name="[internal] load build context",
        )
        #: context paths COPY, ADD and RUN bind mounts read (BuildKit's ``ctxPaths``): the
        #: context's follow paths, so the client sends only those
        self.ctx_paths: set[str] = set()
        self.expanded = 0
        self.now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        #: what :meth:`resolve_ahead` found for each base image: its digest and config, or
        #: why it could not be resolved (raised where the stage is built)
        self.ahead: dict[tuple[str, llb.Platform, str], tuple[str, bytes] | Exception] = {}

    def follow_context_paths(self) -> None:
        """Name what the build reads of the context as its follow paths, as BuildKit does once
        every stage is converted: none when one of them is the whole context."""
        if not self.ctx_paths or "/" in self.ctx_paths or self.options.context_state:
            return
        assert self.context.output is not None
        op = self.context.output.vertex
        assert isinstance(op, SourceOp)
        op.set_follow_paths(sorted(p.lstrip("/") for p in self.ctx_paths))

    def parse_fail(self, inst: Instruction, message: str) -> DockerfileError:
        """An error BuildKit reports while parsing instructions, worded as it does."""
        return self.fail(inst, f"dockerfile parse error on line {inst.line}: {message}")

    def fail(self, inst: Instruction, message: str) -> DockerfileError:
        # A parse error names its line already, as BuildKit words it; others get the file's.
        named = (
            message
            if message.startswith("dockerfile parse error on line")
            else (f"{self.filename}:{inst.line}: {message}")
        )
        return DockerfileError(named, self.snippet(inst))

    def snippet(self, inst: Instruction) -> str:
        """The Dockerfile lines around ``inst``, as BuildKit shows them when a step fails."""
        return source_block(self.parsed.text, self.filename, inst.line, inst.end_line)

    def word(self, inst: Instruction, text: str, env: Mapping[str, str]) -> str:
        try:
            out = expand(text, env, self.escape)
        except ExpansionError as err:
            raise self.expansion_fail(inst, err) from None
        self.spend(inst, len(out))
        return out

    def heredoc(self, inst: Instruction, text: str, env: Mapping[str, str]) -> str:
        try:
            out = expand_heredoc(text, env)
        except ExpansionError as err:
            raise self.expansion_fail(inst, err) from None
        self.spend(inst, len(out))
        return out

    def expansion_fail(self, inst: Instruction, err: ExpansionError) -> DockerfileError:
        limit = isinstance(err, ExpansionLimitError)
        return self.fail(inst, f"{inst.keyword}: {err}" if limit else str(err))

    def spend(self, inst: Instruction, size: int) -> None:
        """Count what expansion made (words, and the environment each RUN carries), so that
        variables reused over and over cannot grow the build past :data:`MAX_EXPANDED`."""
        self.expanded += size
        if self.expanded > MAX_EXPANDED:
            raise self.fail(
                inst,
                f"{inst.keyword}: variable expansion made more than {MAX_EXPANDED >> 20} MiB "
                "of words and environments in this Dockerfile",
            )

    # -- stages -------------------------------------------------------------------------

    def split(self) -> None:
        # As BuildKit: every instruction is read (and refused) first, in order; only then are
        # words expanded, meta ARGs first, as the stages are built.
        staged = False
        for inst in self.parsed.instructions:
            self.check(inst)
            if inst.keyword == "FROM":
                self.check_from(inst)
                staged = True
            elif not staged and inst.keyword != "ARG":
                raise self.fail(inst, "no build stage in current context")
        current: _Stage | None = None
        for inst in self.parsed.instructions:
            if inst.keyword == "FROM":
                flags = self.flags(inst, {"platform"})
                words = inst.args
                name = words[2].lower() if len(words) == 3 else ""
                base = self.word(inst, words[0], self.meta_args)
                if not base:
                    raise self.fail(inst, f"base name ({words[0]}) should not be blank")
                platform = self.stage_platform(inst, flags.get("platform", ""))
                current = _Stage(len(self.stages), name, base, platform, [inst])
                self.stages.append(current)
            elif current is None:
                if inst.keyword != "ARG":
                    raise self.fail(inst, "no build stage in current context")
                for word in inst.args:
                    key, sep, default = word.partition("=")
                    value = self.options.build_args.get(key)
                    if value is None:
                        value = self.word(inst, default, self.meta_args) if sep else None
                    if value is not None:
                        self.meta_args[key] = value
                    else:
                        self.meta_args.pop(key, None)
            else:
                current.instructions.append(inst)
        if not self.stages:
            # BuildKit v0.11 crashes on a Dockerfile of only ARGs; this is its wording otherwise.
            raise DockerfileError(f"{self.filename}: no build stage in current context")
        self.states = self.dispatch_states()

    def stage_platform(self, inst: Instruction, given: str) -> llb.Platform | None:
        """``FROM --platform``'s value, expanded with the meta ARGs (the automatic platform
        ARGs among them) and normalized as containerd does; None when not given (an empty
        expansion is an error, as in BuildKit)."""
        if not given:
            return None
        text = self.word(inst, given, self.meta_args)
        try:
            return llb.Platform(*parse_platform(text))
        except ValueError as err:
            raise self.fail(
                inst, f"failed to parse platform {text}: {err}: invalid argument"
            ) from None

    def platform_of(self, stage: _Stage) -> llb.Platform:
        """The platform a stage's image is resolved and its steps are built for."""
        return stage.platform or self.options.platform

    def check_from(self, inst: Instruction) -> None:
        """What BuildKit refuses while reading a FROM: its arguments and its stage's name."""
        words = inst.args
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            raise self.parse_fail(inst, "FROM requires either one or three arguments")
        name = words[2].lower() if len(words) == 3 else ""
        if name and not _STAGE_NAME.match(name):
            raise self.parse_fail(
                inst,
                f'invalid name for build stage: "{words[2]}", name can\'t start with a '
                "number or contain symbols",
            )

    def check(self, inst: Instruction) -> None:
        """What BuildKit refuses while reading an instruction, before building anything."""
        keyword = inst.keyword
        unknown = unknown_instruction(inst)
        if unknown is not None:
            raise self.parse_fail(inst, unknown)
        if keyword in ("ADD", "COPY") and len(inst.args) < 2:
            raise self.parse_fail(
                inst,
                f"{keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined",
            )
        # Flags are read (and refused) with the instruction, before any stage is built.
        self.flags(inst, _FLAGS.get(keyword, set()))
        if keyword in _ONE_ARGUMENT and not inst.args:
            raise self.parse_fail(inst, f"{keyword} requires exactly one argument")
        if keyword in ("ARG", "EXPOSE", "VOLUME", "SHELL", "HEALTHCHECK") and not inst.args:
            raise self.parse_fail(inst, f"{keyword} requires at least one argument")
        if keyword == "ONBUILD" and inst.child is None:
            raise self.parse_fail(inst, "ONBUILD requires at least one argument")
        if keyword in ("ENV", "LABEL"):
            if not inst.pairs:
                raise self.parse_fail(inst, f"{keyword} requires at least one argument")
            if any(not key for key, _ in inst.pairs):
                raise self.parse_fail(inst, f"{keyword} names can not be blank")
        if keyword == "ARG" and any(not w.partition("=")[0] for w in inst.args):
            raise self.parse_fail(inst, "ARG names can not be blank")
        if keyword == "VOLUME" and any(not v.strip() for v in inst.args):
            raise self.parse_fail(inst, "VOLUME specified can not be an empty string")
        if keyword == "ONBUILD" and inst.child is not None:
            trigger = inst.child.keyword
            if trigger == "ONBUILD":
                raise self.parse_fail(inst, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("FROM", "MAINTAINER"):
                raise self.parse_fail(inst, f"{trigger} isn't allowed as an ONBUILD trigger")

    def check_cycles(self) -> None:
        """Stages that depend on each other (``FROM``, ``--from``) are refused, as BuildKit does."""
        deps: dict[int, set[int]] = {}
        for stage in self.stages:
            found: set[int] = set()
            parent = self.stage_named(stage.base)
            if parent is not None and parent.index < stage.index:
                found.add(parent.index)
            for inst in stage.instructions[1:]:
                for flag in inst.flags:
                    for match in re.finditer(r"(?:^--from=|[,=]from=)([^,\s]+)", flag):
                        ref = self.stage_named(match.group(1))
                        if ref is not None:
                            found.add(ref.index)
            deps[stage.index] = found
        self.deps = deps
        # Depth first with a stack of its own (a chain of stages may be thousands long).
        state: dict[int, int] = {}
        for stage in self.stages:
            if stage.index in state:
                continue
            state[stage.index] = 1
            stack = [(stage.index, iter(deps[stage.index]))]
            while stack:
                n, pending = stack[-1]
                m = next(pending, None)
                if m is None:
                    state[n] = 2
                    stack.pop()
                elif state.get(m) == 1:
                    raise DockerfileError(
                        f"circular dependency detected on stage: {self.label(self.stages[m]) or m}"
                    )
                elif m not in state:
                    state[m] = 1
                    stack.append((m, iter(deps[m])))

    def dependencies(self, target: _Stage) -> tuple[list[_Stage], int]:
        """The stages ``target`` needs (``FROM``, ``--from``), each after those it needs, and
        how deep they nest (after :meth:`check_cycles`, which finds no cycle)."""
        order: list[_Stage] = []
        seen = {target.index}
        stack = [(target.index, iter(sorted(self.deps[target.index])))]
        deepest = 1
        while stack:
            deepest = max(deepest, len(stack))
            n, pending = stack[-1]
            m = next(pending, None)
            if m is None:
                order.append(self.stages[n])
                stack.pop()
            elif m not in seen:
                seen.add(m)
                stack.append((m, iter(sorted(self.deps[m]))))
        return order, deepest

    def stage_named(self, ref: str) -> _Stage | None:
        lowered = ref.lower()
        for stage in self.stages:
            if stage.name == lowered:
                return stage
        if ref.isascii() and ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

    def target(self) -> _Stage:
        if not self.options.target:
            return self.stages[-1]
        found = self.stage_named(self.options.target)
        if found is None:
            names = ", ".join(s.name for s in self.stages if s.name) or "none named"
            raise DockerfileError(
                f"target stage {self.options.target} could not be found (stages: {names})"
            )
        return found

    def label(self, stage: _Stage) -> str:
        return stage.name or (f"stage-{stage.index}" if self.states > 1 else "")

    def dispatch_states(self) -> int:
        """How many build states BuildKit v0.11 counts: the stages, and one more for each
        ``COPY --from`` and each ``RUN --mount`` whose source is not a stage named in the
        Dockerfile (an image, a named context, or scratch for a mount without ``from=``).
        Only when there is one is its unnamed stage left out of step names (``[1/2]``, not
        ``[stage-0 1/2]``)."""
        names = {stage.name for stage in self.stages if stage.name}
        count = len(self.stages)
        for stage in self.stages:
            for inst in stage.instructions:
                if inst.keyword == "COPY":
                    origin = self.flags(inst, _FLAGS["COPY"]).get("from", "")
                    if origin and not origin.isdigit() and origin.lower() not in names:
                        count += 1
                elif inst.keyword == "RUN":
                    for spec in filter(
                        None, self.flags(inst, _FLAGS["RUN"]).get("mount", "").split("\n")
                    ):
                        origin = dict(_mount_items(spec)).get("from") or "scratch"
                        if origin.lower() not in names:
                            count += 1
        return count

    def from_is_a_step(self, stage: _Stage) -> bool:
        """As BuildKit counts: ``FROM`` an image (or a named context) is a step; ``FROM``
        scratch or a stage is not."""
        return bool(self.stage_context(stage) or self.image_base(stage))

    def step(self, stage: _Stage, keyword: str = "FROM") -> str:
        """The next step's prefix, ``[label n/total] `` as BuildKit pads it (none when the
        stage has no steps); in a build for several platforms, the step's platform first."""
        if not stage.steps:
            return ""
        stage.stepped += 1
        width = len(str(stage.steps))
        label = self.label(stage)
        shown = self.shown_platform(stage, keyword)
        return (
            f"[{shown + ' ' if shown else ''}{label + ' ' if label else ''}"
            f"{stage.stepped:>{width}}/{stage.steps}] "
        )

    def shown_platform(self, stage: _Stage, keyword: str) -> str:
        """The platform a step's name begins with in a build for several platforms, as
        BuildKit shows it: a ``RUN``'s is its state's (none on ``scratch``), another step's
        the stage's, else the target's; after ``->``, the target (``TARGETPLATFORM`` or
        ``TARGETARCH``... of the step's environment) when the stage is for another."""
        if not exports_map(self.options):
            return ""
        if keyword == "FROM":
            return platform_key(self.platform_of(stage))
        if keyword == "RUN":
            found = stage.state.platform if stage.state is not None else None
            if found is None:
                return ""
        else:
            found = stage.effective or self.options.platform
        return platform_key(found) + _cross(found, self.run_env(stage))

    async def build(self, stage: _Stage, visiting: tuple[str, ...] = ()) -> _Stage:
        if stage.state is not None:
            return stage
        key = self.label(stage) or "stage-0"
        if key in visiting:
            raise DockerfileError(
                f"circular dependency detected on stage: {key} ({' -> '.join((*visiting, key))})"
            )
        visiting = (*visiting, key)
        found = self.named(stage.name, self.platform_of(stage)) if stage.name else None
        if found:  # a named context replaces the stage of its name, whose lines go unused
            await self.from_context(stage, *found, stage.instructions[0])
            return stage
        # Only what makes a step is numbered: FROM an image, ADD, COPY, RUN, WORKDIR.
        stage.steps = int(self.from_is_a_step(stage)) + sum(
            inst.keyword in _STEPS for inst in stage.instructions[1:]
        )
        await self.base(stage, visiting)
        await self.triggers(stage, visiting)
        for inst in stage.instructions[1:]:
            handler = getattr(self, f"do_{inst.keyword.lower()}")
            prefix = self.step(stage, inst.keyword) if inst.keyword in _STEPS else ""
            await handler(stage, inst, prefix, visiting)
        return stage

    async def triggers(self, stage: _Stage, visiting: tuple[str, ...]) -> None:
        """Run the base's ONBUILD instructions first; they do not pass further down."""
        from llbkit.plugins.frontend_dockerfile.parser import parse

        triggers = stage.config.pop("OnBuild", None) or []
        for text in triggers:
            for inst in parse(text, self.filename).instructions:
                unknown = unknown_instruction(inst)
                if unknown is not None:
                    raise self.fail(inst, f"ONBUILD trigger {text!r}: {unknown}")
                if inst.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise self.fail(inst, f"{inst.keyword} isn't allowed as an ONBUILD trigger")
                handler = getattr(self, f"do_{inst.keyword.lower()}")
                # BuildKit v0.11 names a trigger's step by its instruction alone, unnumbered.
                await handler(stage, inst, "", visiting)

    async def resolve_ahead(self, needed: list[_Stage]) -> None:
        """Resolve the base images of the ``needed`` stages at once, as BuildKit resolves
        every reachable stage's image before it converts one: a Dockerfile ``FROM`` two
        images waits for the slower registry answer, not for both in turn. The first that
        fails is the build's error (said with its ``FROM`` line); the others are cancelled."""
        refs: dict[tuple[str, llb.Platform, str], Instruction] = {}
        for stage in needed:
            if ref := self.image_base(stage):
                found = self.stage_context(stage)
                step = f"[context {found[0]}] load metadata for {ref}" if found else ""
                refs.setdefault((ref, self.platform_of(stage), step), stage.instructions[0])
        if len(refs) < 2:
            return  # nothing to overlap: the stage asks for its own when it is built
        failed: list[tuple[str, llb.Platform, str]] = []

        async def one(key: tuple[str, llb.Platform, str]) -> None:
            try:
                self.ahead[key] = await self.resolve(*key)
            except Exception as err:
                self.ahead[key] = err
                if not failed:
                    failed.append(key)
                    resolving.cancel_scope.cancel()

        async with anyio.create_task_group() as resolving:
            for key in refs:
                resolving.start_soon(one, key)
        if failed:
            ref, platform, step = failed[0]
            await self._resolve(ref, refs[failed[0]], platform, step)  # raises, as the stage would

    def image_base(self, stage: _Stage) -> str:
        """The image a stage's ``FROM`` names (after any named context), or "" for a stage,
        ``scratch`` or a context that is no image."""
        found = self.stage_context(stage)
        if found:
            prefix = "docker-image://"
            ref = found[1].removeprefix(prefix) if found[1].startswith(prefix) else ""
            return "" if ref == "scratch" else ref
        parent = self.stage_named(stage.base)
        if parent is not None and parent.index < stage.index:
            return ""
        return "" if stage.base.lower() == "scratch" else stage.base

    def stage_context(self, stage: _Stage) -> tuple[str, str] | None:
        """The named context a stage is made of, as BuildKit looks it up: one of the stage's
        own name (which replaces the stage), else one of its base's name, unless that names
        an earlier stage."""
        platform = self.platform_of(stage)
        if stage.name and (found := self.named(stage.name, platform)):
            return found
        parent = self.stage_named(stage.base)
        if parent is not None and parent.index < stage.index:
            return None
        return self.named(stage.base, platform)

    async def _resolve(
        self, ref: str, inst: Instruction, platform: llb.Platform | None = None, step: str = ""
    ) -> tuple[str, bytes]:
        """The digest and config of image ``ref`` for ``platform`` (else the target's), for
        ``inst`` (a FROM, or a --from); ``step``: a named context's step."""
        platform = platform or self.options.platform
        try:
            found = self.ahead.get((ref, platform, step))
            if isinstance(found, Exception):
                raise found
            return found or await self.resolve(ref, platform, step)
        except Exception as err:
            # The registry's message after the name as written, as BuildKit words it (the
            # lines of the Dockerfile show where; the message names no line), and its hint
            # of a stage or common image the name is a typo of.
            names = [s.name for s in self.stages if s.name]
            said = hint(ref, [*names, *COMMON_IMAGES])
            raise DockerfileError(f"{ref}: {err}{said}", self.snippet(inst)) from None

    def empty_image(self, stage: _Stage) -> None:
        """The config of a stage with no image: the target's default PATH (Windows' own)."""
        target = self.options.platform
        path = WINDOWS_PATH if target.os == "windows" else DEFAULT_PATH
        stage.config = {"Env": [f"PATH={path}"], "WorkingDir": "/"}
        stage.env = {"PATH": path}
        stage.image_platform = platform_fields(target)
        # The state's environment starts with it too, before any ARG or ENV, as BuildKit's.
        if stage.state is not None:
            stage.state = stage.state.with_env("PATH", path)

    async def base(self, stage: _Stage, visiting: tuple[str, ...]) -> None:
        inst = stage.instructions[0]
        # An earlier stage of the name first, then a named context, as BuildKit looks them up.
        found = self.stage_context(stage)
        if found:
            await self.from_context(stage, *found, inst)
            return
        parent = self.stage_named(stage.base)
        if parent is not None and parent.index < stage.index:
            await self.build(parent, visiting)
            assert parent.state is not None
            stage.state = parent.state
            stage.image_platform = dict(parent.image_platform)
            stage.effective = parent.effective
            stage.config = json.loads(json.dumps(parent.config))
            stage.history = list(parent.history)
            stage.env = dict(parent.env)
            # The image's environment is set again on the state, as for any stage: its keys
            # move after the parent's build args, in the config's order (BuildKit's).
            for item in stage.config.get("Env") or []:
                key, _, value = item.partition("=")
                stage.state = stage.state.with_env(key, value)
            # The parent's build args are in its state's environment, which the stage keeps.
            stage.args = dict(parent.args)
            stage.args_over_env = dict(parent.args_over_env)
            stage.shell = list(parent.shell)
            return
        if stage.base.lower() == "scratch":
            stage.state = llb.scratch()
            self.empty_image(stage)
            stage.effective = stage.platform
            return
        self.check_stage_name(stage.base, inst)
        platform = stage.effective = self.platform_of(stage)
        digest, raw = await self._resolve(stage.base, inst, platform)
        pinned = _pinned(stage.base, digest)
        name = f"{self.step(stage)}FROM {pinned}"
        # The source is pinned to the digest the metadata resolved to, as BuildKit pins it.
        self.from_image(
            stage,
            json.loads(raw),
            llb.image(
                pinned, platform=platform, resolve_mode=self.options.resolve_mode, custom_name=name
            ),
        )

    def named(self, name: str, platform: llb.Platform | None = None) -> tuple[str, str] | None:
        """The named context (``--opt context:NAME=VALUE``) a ``FROM`` or ``--from`` name
        takes, as BuildKit looks it up: by the image's familiar name (``alpine`` for
        ``docker.io/library/alpine:latest``), for the platform first (``NAME::linux/amd64``);
        ``(NAME as found, VALUE)``."""
        if not self.options.contexts or name.lower() in ("scratch", "context"):
            return None
        from llbkit.core.reference import ReferenceError, parse_reference

        try:
            key = parse_reference(name).familiar().removesuffix(":latest")
        except ReferenceError:
            return None
        for found in (f"{key}::{platform_key(platform or self.options.platform)}", key):
            if found in self.options.contexts:
                return found, self.options.contexts[found]
        return None

    async def from_context(self, stage: _Stage, name: str, value: str, inst: Instruction) -> None:
        """The stage on what named context ``name`` gives: an image's config, else none."""
        platform = self.platform_of(stage)
        state, image = await self.context_state(name, value, inst, platform)
        if image is not None:
            stage.effective = platform
            self.from_image(stage, image, state)
        else:
            stage.state = state
            self.empty_image(stage)
            stage.effective = stage.platform

    async def context_state(
        self, name: str, value: str, inst: Instruction, platform: llb.Platform
    ) -> tuple[llb.State, dict[str, Any] | None]:
        """What named context ``name`` gives, and its image's config if it is an image. An
        image is made as BuildKit makes it: its steps named ``[context NAME] …`` and never
        numbered, the source not pinned."""
        kind, sep, rest = value.partition(":")
        if not sep:
            raise self.fail(inst, f"invalid context specifier {value} for {name}")
        if kind == "docker-image":
            ref = rest.removeprefix("//")
            if ref == "scratch":
                return llb.scratch(), None
            step = f"[context {name}] load metadata for {ref}"
            _, raw = await self._resolve(ref, inst, platform, step)
            state = llb.image(
                ref,
                platform=platform,
                resolve_mode=self.options.resolve_mode,
                custom_name=f"[context {name}] {ref}",
            )
            return state, json.loads(raw)
        if kind == "oci-layout":
            return await self.layout_state(name, rest.removeprefix("//"), inst, platform)
        if kind == "local":
            # Its own .dockerignore applies, read in a step of its own, as BuildKit reads it.
            if (rest, name) not in self.local_ignores:
                text = await self.read_ignore(rest, f"[context {name}] load .dockerignore")
                self.local_ignores[rest, name] = read_dockerignore(text.decode("utf-8", "replace"))
            state = llb.local(
                rest,
                exclude_patterns=self.local_ignores[rest, name],
                shared_key_hint=f"context:{name}",
                custom_name=f"[context {name}] load from client",
            )
            return state, None
        if kind in ("git", "http", "https") or kind.startswith("git@"):
            # A repository's checkout (its .git kept), else a file downloaded, as BuildKit's.
            ref = parse_git_ref(value)
            if ref is not None:
                return git_context(ref, value, keep_git_dir=True), None
            if kind == "git" or kind.startswith("git@"):
                raise self.fail(inst, f"invalid git context {value}")
            return llb.http(value, custom_name=f"[context {name}] {value}"), None
        if kind == "input":
            return self.input_state(name, rest, inst)
        raise self.fail(inst, f"unsupported context source {kind} for {name}")

    def input_state(
        self, name: str, key: str, inst: Instruction
    ) -> tuple[llb.State, dict[str, Any] | None]:
        """A definition the client passed (BuildKit's frontend inputs: what buildx bake
        sends for a ``target:`` context), an image when its metadata names a config."""
        if key not in self.options.inputs:
            raise self.fail(inst, f"invalid input {key} for {name}")
        state = llb.from_definition(self.options.inputs[key])
        said = self.options.input_metadata.get(key)
        if said is None:
            return state, None
        try:
            encoded = _json_object(said).get("containerimage.config")
            config = base64.b64decode(encoded, validate=True) if encoded is not None else None
        except (ValueError, TypeError) as err:
            raise self.fail(inst, f"failed to parse input metadata {said}: {err}") from None
        if config is None:
            return state, None
        try:
            return state, _json_object(config)
        except ValueError as err:
            raise self.fail(inst, f"failed to parse image config for {name}: {err}") from None

    async def layout_state(
        self, name: str, spec: str, inst: Instruction, platform: llb.Platform
    ) -> tuple[llb.State, dict[str, Any]]:
        """An OCI layout context, ``oci-layout://STORE@DIGEST``: the image DIGEST of the
        layout the client shares as STORE, named after the context as BuildKit names it
        (``docker.io/library/NAME@DIGEST``)."""
        from llbkit.core.reference import ReferenceError, parse_reference

        try:
            ref = parse_reference(spec, default_tag=False)
        except ReferenceError:
            reason = "repository name must be lowercase" if spec.lower() != spec else ""
            said = reason or "invalid reference format"
            raise self.fail(
                inst, f'could not parse oci-layout reference "{spec}": {said}'
            ) from None
        if not ref.digest:
            raise self.fail(inst, f'oci-layout reference "{spec}" has no digest')
        store = spec.partition("@")[0].removesuffix(f":{ref.tag}" if ref.tag else "")
        shown = f"{parse_reference(name.partition('::')[0]).name}@{ref.digest}"
        step = f"[context {name}] load metadata for {shown}"
        _, raw = await self._resolve(f"oci-layout://{store}@{ref.digest}", inst, platform, step)
        state = llb.oci_layout(
            shown,
            store_id=store,
            platform=platform,
            custom_name=f"[context {name}] OCI load from client",
        )
        return state, json.loads(raw)

    def from_image(self, stage: _Stage, image: dict[str, Any], state: llb.State) -> None:
        """The stage on ``image`` (its config), whose source is ``state``."""
        # What the image says it is for, as BuildKit keeps it in the stage's config (an
        # image of a single manifest is taken whatever its platform).
        stage.image_platform = {k: image[k] for k in _PLATFORM_FIELDS if image.get(k)}
        config = image.get("config") or {}
        stage.config = config
        stage.history = list(image.get("history") or [])
        for item in config.get("Env") or []:
            key, _, value = item.partition("=")
            stage.env[key] = value
        if "PATH" not in stage.env:
            # Every stage has a PATH: BuildKit adds the default where the image has none.
            stage.env["PATH"] = DEFAULT_PATH
            config["Env"] = [*(config.get("Env") or []), f"PATH={DEFAULT_PATH}"]
        stage.shell = list(config.get("Shell") or DEFAULT_SHELL)
        for key, value in stage.env.items():
            state = state.with_env(key, value)
        if config.get("WorkingDir"):
            state = state.with_dir(config["WorkingDir"])
        if config.get("User"):
            state = state.with_user(config["User"])
        stage.state = state

    # -- helpers -------------------------------------------------------------------------

    def flags(self, inst: Instruction, allowed: set[str]) -> dict[str, str]:
        """The instruction's flags, checked as BuildKit checks them: known, once each (but
        ``--mount``), a value for those that take one, true or false for the others."""
        found: dict[str, str] = {}
        for flag in inst.flags:
            name, sep, value = flag.removeprefix("--").partition("=")
            if name not in allowed:
                raise self.parse_fail(inst, f"unknown flag: {name}")
            if name in found and name not in _MULTI_FLAGS:
                raise self.parse_fail(inst, f"duplicate flag specified: {name}")
            if name in _BOOL_FLAGS:
                if sep and value.lower() not in ("true", "false"):
                    raise self.parse_fail(
                        inst, f"expecting boolean value for flag {name}, not: {value}"
                    )
                found[name] = value.lower() if sep else "true"
            elif not sep:
                raise self.parse_fail(inst, f"missing a value on flag: {name}")
            elif name in _MULTI_FLAGS:
                found[name] = found[name] + "\n" + value if name in found else value
            else:
                found[name] = value
        return found

    def shown(
        self, inst: Instruction, stage: _Stage, *, run: bool = False, summary: str = ""
    ) -> str:
        """The step's name as BuildKit gives it: the line (and a heredoc's ``summary`` after
        it) with its variables expanded (a RUN keeps its quotes and unset variables), the
        keyword upper-case."""
        written = inst.original + summary
        try:
            text = expand(written, self.scope(stage), self.escape, raw_quotes=run, skip_unset=run)
        except ExpansionError:
            text = written
        return _shown(text)

    def scope(self, stage: _Stage) -> dict[str, str]:
        """What expansion sees in a stage: its ARGs, then its ENV over them."""
        return {**stage.args, **stage.env, **stage.args_over_env}

    def record(self, stage: _Stage, created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {
            "created": self.now,
            "created_by": created_by,
            "comment": "buildkit.dockerfile.v0",
        }
        if empty:
            entry["empty_layer"] = True
        stage.history.append(entry)

    def run_env(self, stage: _Stage) -> dict[str, str]:
        return self.scope(stage)

    def with_run_env(self, stage: _Stage, inst: Instruction) -> llb.State:
        """The stage's state with every variable a RUN sees: the state already holds them in
        BuildKit's order (the image's, then each ARG and ENV as it came), so a value is only
        set where it differs, never moved."""
        assert stage.state is not None
        state = stage.state
        for key, value in self.run_env(stage).items():
            self.spend(inst, len(key) + len(value))
            if state.get_env(key) != value:
                state = state.with_env(key, value)
        return state

    async def source_state(self, stage: _Stage, ref: str, inst: Instruction) -> llb.State:
        found = self.named(ref)
        if found:
            return (await self.context_state(*found, inst, self.options.platform))[0]
        found = self.stage_named(ref)
        if found is not None:
            if found.index > stage.index:
                # BuildKit v0.11 reads a later stage as still empty; so does llbkit.
                return llb.scratch()
            assert found.state is not None, "stages are built before they are read"
            return found.state
        self.check_stage_name(ref, inst)
        return await self.image_stage(ref, inst)

    def check_stage_name(self, ref: str, inst: Instruction) -> None:
        """An image name a ``FROM`` or ``--from`` gives, refused in BuildKit's words."""
        from llbkit.core.reference import parse_reference

        try:
            parse_reference(ref)
        except Exception:
            reason = ": repository name must be lowercase" if ref.lower() != ref else ""
            raise self.fail(
                inst, f'failed to parse stage name "{ref}": invalid reference format{reason}'
            ) from None

    async def image_stage(self, ref: str, inst: Instruction) -> llb.State:
        """An image read by ``--from`` as BuildKit v0.11 reads it: a stage of its own made
        of the FROM alone (unnumbered), its metadata resolved and the source pinned to the
        digest, so that it is the same source as a FROM of the same name."""
        digest, _ = await self._resolve(ref, inst)
        pinned = _pinned(ref, digest)
        return llb.image(
            pinned, resolve_mode=self.options.resolve_mode, custom_name=f"FROM {pinned}"
        )

    # -- instructions --------------------------------------------------------------------

    async def do_run(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        flags = self.flags(inst, {"mount", "network", "security"})
        assert stage.state is not None
        mounts = []
        summary = ""
        if inst.json is not None:
            if not inst.json:
                # BuildKit finds out only as it marshals the definition, and says so.
                raise UserError("failed to marshal LLB definition: arguments are required")
            args = inst.json
            shown = " ".join(inst.json)
        else:
            command = inst.rest
            single = parse_heredoc(command) if inst.heredocs else None
            if single is not None:
                doc = inst.heredocs[0]
                content = chomp(doc.content) if doc.chomp else doc.content
                # BuildKit names such a step by the script's first line too.
                summary = f" ({_summary(doc.content)})"
                if content.startswith("#!"):
                    # A script with its own interpreter runs as a file, as BuildKit runs it.
                    script = llb.scratch().file(
                        llb.mkfile("/" + doc.name, 0o755, content.encode()),
                        custom_name=INLINE_DOCUMENT,
                    )
                    # As BuildKit mounts it: at "/dev/pipes/", the script's folder "/".
                    mounts.append(
                        llb.Bind("/dev/pipes/", script, selector="/", readonly=True, output=False)
                    )
                    command = posixpath.join("/dev/pipes", doc.name)
                else:
                    command = content
            elif inst.heredocs:
                # The heredocs stay part of the script, for the shell to read.
                command += "".join(f"\n{h.content}{h.name}" for h in inst.heredocs)
            args = [*stage.shell, command]
            shown = " ".join([*stage.shell, command])
        mounts += await self.run_mounts(stage, inst, flags.get("mount", ""), visiting)
        network = {"": "sandbox", "default": "sandbox", "none": "none", "host": "host"}.get(
            flags.get("network", "")
        )
        if network is None:
            raise self.fail(inst, f"invalid network mode {flags['network']!r}")
        state = self.sandbox(self.with_run_env(stage, inst), stage)
        if self.options.network and network == "sandbox":
            network = self.options.network
        options: dict[str, Any] = {
            "custom_name": f"{prefix}{self.shown(inst, stage, run=True, summary=summary)}",
            "description": {"llbkit.source": self.snippet(inst)},
            "proxy_env": _proxy_env(self.options.build_args),
        }
        if network != "sandbox":
            options["network"] = network
        if flags.get("security", "sandbox") not in ("sandbox", "insecure"):
            raise self.parse_fail(inst, f"unsupported security mode {flags['security']}")
        if flags.get("security") == "insecure":
            options["security"] = "insecure"
        if self.options.no_cache:
            options["ignore_cache"] = True
        result = state.run(args=args, mounts=mounts, **options).root()
        # Build args are the step's environment, not the stage's.
        stage.state = replace(result, env=stage.state.env)
        # As BuildKit's history shows it: the build args the step saw, then the command.
        seen = [
            # every declaration, a name declared twice twice, as BuildKit lists them
            f"{k}={stage.env.get(k, stage.args.get(k, ''))}"
            for k in stage.declared
        ]
        with_args = f"|{len(seen)} {' '.join(seen)} " if seen else ""
        self.record(stage, f"RUN {with_args}{shown} # buildkit", False)

    async def run_mounts(
        self, stage: _Stage, inst: Instruction, specs: str, visiting: tuple[str, ...]
    ) -> list[Any]:
        """A RUN's ``--mount``s, then the ``/dev/shm`` of ``shm-size``, in BuildKit's order."""
        found = [await self.mount(stage, inst, s, visiting) for s in specs.split("\n") if s]
        if self.options.shm_size > 0:
            found.append(llb.Tmpfs("/dev/shm", size=self.options.shm_size))
        return found

    def sandbox(self, state: llb.State, stage: _Stage) -> llb.State:
        """The frontend options every RUN gets: hosts, hostname, ulimits, cgroup parent."""
        for host, ip in self.options.extra_hosts:
            state = state.with_extra_host(host, ip)
        if self.options.hostname:
            state = state.with_hostname(self.options.hostname)
        for name, soft, hard in self.options.ulimits:
            state = state.with_ulimit(name, soft, hard)
        if self.options.cgroup_parent:
            state = state.with_cgroup_parent(self.options.cgroup_parent)
        return state

    async def mount(
        self, stage: _Stage, inst: Instruction, spec: str, visiting: tuple[str, ...]
    ) -> Any:
        problem = mount_key_error(spec, lambda v: self.word(inst, v, self.scope(stage)))
        if problem:
            raise self.fail(inst, problem)
        values: dict[str, str] = {}
        for key, value in _mount_items(spec):
            if key == "from":
                values[key] = value or ""
            else:
                values[key] = "true" if value is None else self.word(inst, value, self.scope(stage))
        problem = mount_value_error(values)
        if problem:
            raise self.fail(inst, problem)
        kind = values.pop("type", "bind")
        target = values.pop("target", values.pop("dst", values.pop("destination", "")))
        written = target  # a cache's id is named after the target as written
        if not target and kind == "secret":
            named = values.get("source") or values.get("src") or values.get("id", "")
            target = f"/run/secrets/{posixpath.basename(named)}"
        if kind not in ("ssh", "secret") and not target.startswith("/"):
            # Relative to the working directory, which a missing target is; never / itself.
            target = posixpath.join(stage.config.get("WorkingDir") or "/", target)
            if target.rstrip("/") == "":
                raise self.fail(inst, 'invalid mount target "/"')
        source = values.pop("source", values.pop("src", ""))
        readonly = _mount_readonly(kind, values)
        # The source as BuildKit selects it: from the root of what is mounted.
        selected = "" if clean("/" + source) == "/" else clean("/" + source)
        origin = values.pop("from", "")
        if origin:
            found = self.stage_named(origin)
            if found is not None and found.index < stage.index:
                await self.build(found, visiting)
        base = await self.source_state(stage, origin, inst) if origin else None
        if not origin and kind in ("bind", "tmpfs"):
            # BuildKit counts any mount of the context, a tmpfs's (always "/") too.
            self.ctx_paths.add(clean("/" + source))
        if kind == "bind":
            return llb.Bind(
                target, base or self.context, selector=selected, readonly=readonly, output=False
            )
        if kind == "cache":
            sharing = values.get("sharing", "shared").lower()
            if sharing not in ("shared", "private", "locked"):
                raise self.fail(inst, f"invalid cache sharing {sharing!r}")
            selector = selected
            if not selector and any(k in values for k in ("mode", "uid", "gid")):
                # The cache starts as a directory with the mode and owner asked for.
                mode = int(values.get("mode", "0755"), 8)
                owner = f"{int(values.get('uid', '0'))}:{int(values.get('gid', '0'))}"
                base = (base or llb.scratch()).file(
                    llb.mkdir("/cache", mode, owner=owner),
                    custom_name="[internal] settings cache mount permissions",
                )
                selector = "/cache"
            # BuildKit's id: the BUILDKIT_CACHE_MOUNT_NS namespace, "/", the id (by default the
            # target as written, cleaned), so "/root/.cache" is "//root/.cache".
            namespace = self.options.build_args.get("BUILDKIT_CACHE_MOUNT_NS", "")
            return llb.Cache(
                target,
                id=f"{namespace}/{values.get('id') or clean(written)}",
                sharing=sharing,  # type: ignore[arg-type]
                source=base,
                selector=selector,
                readonly=readonly,
            )
        if kind == "tmpfs":
            size = ram_in_bytes(values.get("size", "0")) or 0
            return llb.Tmpfs(target, size=size, readonly=readonly)
        if kind == "secret":
            # BuildKit's id: the source, else the id, else the target's name
            sid = source or values.get("id") or posixpath.basename(target)
            return llb.Secret(
                sid,
                dest=target or f"/run/secrets/{sid}",
                mode=int(values.get("mode", "0400"), 8),
                uid=int(values.get("uid", "0")),
                gid=int(values.get("gid", "0")),
                optional=not parse_bool(values.get("required", "false")),
            )
        if kind == "ssh":
            return llb.SSH(
                id=values.get("id", ""),
                dest=target,
                mode=int(values.get("mode", "0600"), 8),
                uid=int(values.get("uid", "0")),
                gid=int(values.get("gid", "0")),
                optional=not parse_bool(values.get("required", "false")),
            )
        raise self.fail(inst, f'unsupported mount type "{kind}"')

    async def do_copy(
        self,
        stage: _Stage,
        inst: Instruction,
        prefix: str,
        visiting: tuple[str, ...],
        *,
        add: bool = False,
    ) -> None:
        allowed = {"from", "chown", "chmod", "link", "exclude", "parents"}
        if add:
            allowed |= {"checksum", "keep-git-dir"}
        flags = self.flags(inst, allowed)
        scope = self.scope(stage)
        if len(inst.args) < 2:
            raise self.parse_fail(
                inst,
                f"{inst.keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined",
            )
        words, heredocs = self.copy_words(inst, scope)
        dest = words[-1]
        sources = words[:-1]
        # BuildKit v0.11 leaves several sources into a non-directory to the copy itself
        # ("cannot copy to non-directory"): the destination may be a directory already.
        workdir = stage.config.get("WorkingDir") or "/"
        if not dest.startswith("/"):
            # As Go's path.Join, cleaned; a directory still when written as one (or ".").
            directory = dest in (".", "") or dest.endswith("/")
            dest = clean(posixpath.join(workdir, dest)).rstrip("/") + ("/" if directory else "")
        origin = flags.get("from", "")  # not expanded, as in BuildKit v0.11
        if origin:
            found = self.stage_named(origin)
            if found is not None and found.index < stage.index:
                await self.build(found, visiting)
        src_state = await self.source_state(stage, origin, inst) if origin else self.context
        chmod = flags.get("chmod")
        mode: int | None = None
        mode_str = ""
        if chmod:
            try:
                mode = int(chmod, 8)
            except ValueError:
                from llbkit.core.llb.modes import parse_symbolic

                try:
                    parse_symbolic(chmod)
                except ValueError:
                    raise self.fail(inst, f"invalid chmod parameter {chmod!r}") from None
                mode_str = chmod
        action = self.copy_actions(
            inst,
            sources=sources,
            dest=dest,
            flags=flags,
            scope=scope,
            heredocs=heredocs,
            src_state=src_state,
            mode=mode,
            mode_str=mode_str,
            parents=flags.get("parents") == "true",
            add=add,
            from_stage=bool(origin),
        )
        assert stage.state is not None
        name = f"{prefix}{self.shown(inst, stage)}"
        source = {"llbkit.source": self.snippet(inst)}
        # As BuildKit's: --no-cache runs a COPY or ADD anew too, not only RUN.
        opts: dict[str, Any] = {"custom_name": name, "description": source}
        if self.options.no_cache:
            opts["ignore_cache"] = True
        if flags.get("link") == "true":
            stage.state = llb.merge([stage.state, llb.scratch().file(action, **opts)])
        else:
            stage.state = stage.state.file(action, **opts)
        if not origin:
            for src in sources:
                if src not in heredocs and not (add and src.startswith(("http://", "https://"))):
                    self.ctx_paths.add(clean("/" + src))
        # History shows the expanded paths, then the heredocs by name, without the flags.
        shown = [w for w in sources if w not in heredocs]
        shown += [f"<<{heredocs[w].name}" for w in sources if w in heredocs]
        self.record(stage, f"{inst.keyword} {' '.join([*shown, words[-1]])} # buildkit", False)

    def copy_words(
        self, inst: Instruction, scope: dict[str, str]
    ) -> tuple[list[str], dict[str, Any]]:
        """COPY's sources and destination, expanded (JSON form too), and its heredoc sources
        by their marker."""
        docs = {h.name: h for h in inst.heredocs}
        heredocs: dict[str, Any] = {}
        words = []
        for n, raw in enumerate(inst.args):
            marker = parse_heredoc(raw) if n < len(inst.args) - 1 else None
            if marker is not None and marker.name in docs:
                doc = docs[marker.name]
                content = chomp(doc.content) if marker.chomp else doc.content
                heredocs[raw] = replace(doc, content=content, expand=marker.expand)
                words.append(raw)
            else:
                words.append(self.word(inst, raw, scope))
        return words, heredocs

    def copy_actions(
        self,
        inst: Instruction,
        *,
        sources: list[str],
        dest: str,
        flags: dict[str, str],
        scope: dict[str, str],
        heredocs: dict[str, Any],
        src_state: llb.State,
        mode: int | None,
        mode_str: str,
        parents: bool,
        add: bool,
        from_stage: bool,
    ) -> llb.FileAction:
        """One FileOp copying every source (heredocs, URLs, paths) to ``dest``."""
        chown = self.word(inst, flags.get("chown", ""), scope) or None
        excludes = [self.word(inst, e, scope) for e in flags.get("exclude", "").split("\n") if e]
        action: llb.FileAction | None = None
        # Paths first, then the heredocs, in one FileOp, as BuildKit orders its actions.
        ordered = [s for s in sources if s not in heredocs] + [s for s in sources if s in heredocs]
        for src in ordered:
            if src in heredocs:
                doc = heredocs[src]
                content = self.heredoc(inst, doc.content, scope) if doc.expand else doc.content
                # Written 0664 under the heredoc's name, copied with --chmod's mode: BuildKit's.
                here = llb.scratch().file(
                    llb.mkfile("/" + doc.name, 0o664, content.encode()),
                    custom_name=INLINE_DOCUMENT,
                )
                action = _copy(
                    action,
                    here,
                    "/" + doc.name,
                    dest,
                    owner=chown,
                    mode=mode,
                    create_dest_path=True,
                )
            elif _is_git_ref(src):
                if not add:
                    raise self.fail(inst, "source can't be a git ref for COPY")
                remote, _, fragment = src.partition("#")
                commit, _, subdir = fragment.partition(":")
                repo = llb.git(
                    remote, commit, subdir=subdir, keep_git_dir=flags.get("keep-git-dir") == "true"
                )
                action = _copy(
                    action,
                    repo,
                    "/",
                    dest,
                    owner=chown,
                    mode=mode,
                    create_dest_path=True,
                    copy_dir_contents=True,
                )
            elif src.startswith(("http://", "https://")):
                if not add:
                    raise self.fail(inst, "source can't be a URL for COPY")
                name = posixpath.basename(urlsplit(src).path) or "__unnamed__"
                checksum = self.word(inst, flags.get("checksum", ""), scope)
                url = llb.http(src, checksum=checksum, filename=name)
                action = _copy(
                    action, url, "/" + name, dest, owner=chown, mode=mode, create_dest_path=True
                )
            elif parents:
                # --parents: the path below the pivot (the root, or a ``/./`` marker) is kept.
                pivot, _, rest = src.partition("/./") if "/./" in src else ("", "", src)
                action = _copy(
                    action,
                    src_state,
                    pivot or "/",
                    dest,
                    owner=chown,
                    mode=mode,
                    mode_str=mode_str,
                    follow_symlinks=True,
                    copy_dir_contents=True,
                    create_dest_path=True,
                    include_patterns=[rest.lstrip("./").strip("/") or "*"],
                    exclude_patterns=excludes,
                )
            else:
                action = _copy(
                    action,
                    src_state,
                    src,
                    dest,
                    owner=chown,
                    mode=mode,
                    mode_str=mode_str,
                    follow_symlinks=True,
                    copy_dir_contents=True,
                    attempt_unpack=add and not from_stage,
                    create_dest_path=True,
                    allow_wildcard=True,
                    allow_empty_wildcard=True,
                    exclude_patterns=excludes,
                )
        assert action is not None
        return action

    async def do_add(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        await self.do_copy(stage, inst, prefix, visiting, add=True)

    async def do_env(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        pairs = self.pairs(stage, inst)
        for key, value in pairs:
            stage.env[key] = value
            stage.args_over_env.pop(key, None)
            assert stage.state is not None
            stage.state = stage.state.with_env(key, value)
        stage.config["Env"] = [f"{k}={v}" for k, v in stage.env.items()]
        self.record(stage, "ENV " + " ".join(f"{k}={v}" for k, v in pairs), True)

    def pairs(self, stage: _Stage, inst: Instruction) -> list[tuple[str, str]]:
        """ENV's or LABEL's pairs as the parser split them, key and value expanded."""
        scope = self.scope(stage)
        return [
            (self.word(inst, key, scope), self.word(inst, value, scope))
            for key, value in inst.pairs or []
        ]

    async def do_arg(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        shown = []
        for word in inst.args:
            raw, sep, default = word.partition("=")
            key = self.word(inst, raw, self.scope(stage))
            expanded = self.word(inst, default, self.scope(stage)) if sep else None
            value = self.options.build_args.get(key)
            if value is None:
                value = expanded
            if value is None and key in self.meta_args:
                value = self.meta_args[key]
            if value is not None:
                stage.args[key] = value
                if key in stage.env:
                    stage.args_over_env[key] = value
                # In the state's environment from here, after what it has (BuildKit's order).
                assert stage.state is not None
                stage.state = stage.state.with_env(key, value)
            stage.declared.append(key)
            shown.append(key if expanded is None else f"{key}={expanded}")
        self.record(stage, "ARG " + " ".join(shown), True)

    async def do_workdir(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        path = self.word(inst, inst.rest, self.scope(stage))
        if not path.startswith("/"):
            # Relative to the current one, cleaned; an absolute path is kept as written.
            current = stage.config.get("WorkingDir") or "/"
            path = posixpath.normpath(posixpath.join("/", current, path))
        stage.config["WorkingDir"] = path
        assert stage.state is not None
        stage.state = stage.state.with_dir(path)
        if path == "/":
            self.record(stage, "WORKDIR /", True)
            return
        # The directory is created for the current user, as BuildKit does.
        user = stage.config.get("User") or None
        stage.state = stage.state.file(
            llb.mkdir(path, 0o755, make_parents=True, owner=user),
            custom_name=f"{prefix}{self.shown(inst, stage)}",
        )
        self.record(stage, f"WORKDIR {path}", False)

    async def do_user(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        user = self.word(inst, inst.rest, self.scope(stage))
        stage.config["User"] = user
        assert stage.state is not None
        stage.state = stage.state.with_user(user)
        self.record(stage, f"USER {user}", True)

    async def do_label(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        pairs = self.pairs(stage, inst)
        labels = dict(stage.config.get("Labels") or {})
        labels.update(dict(pairs))
        stage.config["Labels"] = labels
        self.record(stage, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), True)

    async def do_expose(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        words: list[str] = []
        for raw in inst.args:
            try:
                words += expand_words(raw, self.scope(stage), self.escape)
            except ExpansionError as err:
                raise self.fail(inst, str(err)) from None
        try:
            ports = exposed_ports(words)
        except ValueError as err:
            raise self.fail(inst, str(err)) from None
        found = dict(stage.config.get("ExposedPorts") or {})
        found.update({p: {} for p in ports})
        stage.config["ExposedPorts"] = found
        # The history lists this instruction's ports, sorted, as Go prints a map.
        self.record(stage, f"EXPOSE {go_ports(ports)}", True)

    async def do_volume(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        paths = [self.word(inst, w, self.scope(stage)) for w in inst.args]
        if any(not p for p in paths):
            raise self.fail(inst, "VOLUME specified can not be an empty string")
        volumes = dict(stage.config.get("Volumes") or {})
        volumes.update({p: {} for p in paths})
        stage.config["Volumes"] = volumes
        self.record(stage, f"VOLUME {go_value(paths)}", True)

    def command(self, stage: _Stage, inst: Instruction) -> list[str]:
        if inst.json is not None:
            return list(inst.json)
        return [*stage.shell, inst.rest]

    async def do_cmd(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["Cmd"] = self.command(stage, inst)
        stage.config["ArgsEscaped"] = True
        stage.cmd_set = True
        self.record(stage, f"CMD {go_quoted(stage.config['Cmd'])}", True)

    async def do_entrypoint(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["Entrypoint"] = self.command(stage, inst)
        if not stage.cmd_set:
            stage.config["Cmd"] = None  # an inherited CMD does not survive a new ENTRYPOINT
        self.record(stage, f"ENTRYPOINT {go_quoted(stage.config['Entrypoint'])}", True)

    async def do_shell(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        if inst.json is None:
            raise self.parse_fail(inst, "SHELL requires the arguments to be in JSON form")
        stage.shell = list(inst.json)
        stage.config["Shell"] = list(inst.json)
        self.record(stage, f"SHELL {go_value(inst.json)}", True)

    async def do_stopsignal(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        signal = self.word(inst, inst.rest, self.scope(stage))
        try:
            parse_signal(signal)
        except ValueError as err:
            raise self.fail(inst, str(err)) from None
        stage.config["StopSignal"] = signal
        self.record(stage, f"STOPSIGNAL {signal}", True)

    async def do_healthcheck(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["Healthcheck"] = self.healthcheck(inst)
        self.record(stage, f"HEALTHCHECK {_go_health(stage.config['Healthcheck'])}", True)

    def healthcheck(self, inst: Instruction) -> dict[str, Any]:
        """HEALTHCHECK's config, checked as BuildKit checks it."""
        kind = inst.args[0].upper()
        command = inst.args[1:]
        if kind == "NONE":
            if command:
                raise self.parse_fail(inst, "HEALTHCHECK NONE takes no arguments")
            return {"Test": ["NONE"]}
        if kind != "CMD":
            raise self.parse_fail(inst, f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
        if not command or not command[0]:
            raise self.parse_fail(inst, "Missing command after HEALTHCHECK CMD")
        flags = self.flags(inst, {"interval", "timeout", "start-period", "retries"})
        test = ["CMD", *command] if inst.json is not None else ["CMD-SHELL", command[0]]
        check: dict[str, Any] = {"Test": test}
        for flag, key in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
        ):
            if flag in flags:
                check[key] = self.duration(inst, flag, flags[flag])
        if flags.get("retries"):
            try:
                retries = int(flags["retries"])
            except ValueError:
                raise self.parse_fail(
                    inst, f'strconv.ParseInt: parsing "{flags["retries"]}": invalid syntax'
                ) from None
            if retries < 0:
                raise self.parse_fail(inst, f"--retries cannot be negative ({retries})")
            check["Retries"] = retries
        return check

    def duration(self, inst: Instruction, flag: str, text: str) -> int:
        try:
            found = parse_duration(text)
        except ValueError as err:
            raise self.parse_fail(inst, str(err)) from None
        if 0 < found < 1_000_000:
            raise self.parse_fail(inst, f'Interval "{flag}" cannot be less than 1ms')
        return found

    async def do_onbuild(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        triggers = list(stage.config.get("OnBuild") or [])
        triggers.append(re.sub(r"(?i)^\s*ONBUILD\s*", "", inst.original, count=1))
        stage.config["OnBuild"] = triggers

    async def do_maintainer(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["__author"] = inst.rest
        self.record(stage, f"MAINTAINER {inst.rest}", True)

    async def do_from(self, *args: Any) -> None:
        raise AssertionError("FROM starts a stage")


def _json_object(text: str | bytes) -> dict[str, Any]:
    """``text`` as a JSON object; ValueError (with the parser's reason) for anything else."""
    try:
        found = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(found, dict):
        raise ValueError("not a JSON object")
    return found


def _is_git_ref(src: str) -> bool:
    """A source that is a Git repository to ADD or COPY, as BuildKit tells one: what
    ``ParseGitRef`` takes, but ``github.com/…``, which is a local path there."""
    from llbkit.plugins.frontend_dockerfile.remote import parse_git_ref

    return not src.startswith("github.com/") and parse_git_ref(src) is not None


def _shown(text: str) -> str:
    """An instruction's text with its keyword upper-case."""
    text = text.strip()
    keyword = text.split(None, 1)[0] if text else ""
    return keyword.upper() + text[len(keyword) :]


def _mount_items(spec: str) -> Iterator[tuple[str, str | None]]:
    """A ``--mount`` spec's ``key=value`` items as written: keys lower-cased, the value of a
    bare key None (``ro``)."""
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        yield key.strip().lower(), value if sep else None


def _pinned(written: str, digest: str) -> str:
    """As BuildKit names an image it resolved: the normalized reference as written (its tag
    only if one was written), pinned to the digest it resolved to."""
    from llbkit.core.reference import parse_reference

    ref = parse_reference(written, default_tag=False)
    tag = f":{ref.tag}" if ref.tag else ""
    return f"{ref.name}{tag}@{digest}"


def _copy(
    action: llb.FileAction | None, source: llb.State, src: str, dest: str, **options: Any
) -> llb.FileAction:
    """A copy action, chained after ``action`` in the same FileOp when there is one."""
    if action is None:
        return llb.copy(source, src, dest, **options)
    return action.copy(source, src, dest, **options)


def _go_list(items: list[str]) -> str:
    """Go's ``%q`` of a string slice: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def _go_health(check: dict[str, Any]) -> str:
    """BuildKit records a HEALTHCHECK as Go's ``%q`` of its config struct."""
    retries = int(check.get("Retries", 0))
    quoted = f"'{chr(retries)}'" if 32 <= retries < 127 else f"'\\x{retries:02x}'"
    parts = [_go_list(check["Test"])] + [
        json.dumps(go_duration(int(check.get(k, 0))))
        for k in ("Interval", "Timeout", "StartPeriod")
    ]
    return "&{" + " ".join([*parts, quoted]) + "}"


#: stages needing each other deeper than this are built in order rather than by recursion
_NESTED = 32


async def convert(
    parsed: Parsed,
    options: BuildOptions,
    resolve: ImageResolver,
    read_ignore: IgnoreReader = _no_ignore_files,
) -> Converted:
    """The target stage's LLB state and the image config (with history) the exporters write;
    ``read_ignore`` reads a local named context's ignore file (none by default)."""
    converter = _Converter(parsed, options, resolve, read_ignore)
    converter.split()
    converter.check_cycles()
    wanted = converter.target()
    needed, depth = converter.dependencies(wanted)
    await converter.resolve_ahead(needed)
    if depth > _NESTED:
        # Stages that need each other thousands deep: built in order, each finding those it
        # needs built, so build()'s recursion never nests (a shallow Dockerfile's order,
        # as the recursion takes it, is kept).
        for stage in needed[:-1]:
            await converter.build(stage)
    target = await converter.build(wanted)
    converter.follow_context_paths()
    declared = set(converter.meta_args) | {
        name for stage in converter.stages for name in stage.declared
    }
    # The frontend's own (BUILDKIT_*, SOURCE_DATE_EPOCH) and the proxies every RUN gets are
    # read without an ARG: never unconsumed.
    unused = sorted(
        k
        for k in set(options.build_args) - declared
        if not k.startswith("BUILDKIT_") and k != "SOURCE_DATE_EPOCH" and k.lower() not in PROXIES
    )
    # Docker's wording, a Go slice: [A B]
    listed = "[" + " ".join(unused) + "]"
    warnings = [f"One or more build-args {listed} were not consumed"] if unused else []
    assert target.state is not None
    config = dict(target.config)
    author = config.pop("__author", None)
    config.setdefault("Env", [f"PATH={DEFAULT_PATH}"])
    if options.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **options.labels}
    # A target platform asked for is the image's; else the target stage's image says (an
    # image FROM --platform=linux/arm64 is arm64's), as BuildKit v0.11 writes it.
    platform = target.image_platform
    if options.platforms or not platform:
        kept = {k: v for k, v in platform.items() if k not in _PLATFORM_FIELDS[:3]}
        platform = {**kept, **platform_fields(options.platform)}
    image: dict[str, Any] = {
        "architecture": platform.get("architecture", ""),
        "os": platform.get("os", ""),
        "config": image_config(config),
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": target.history,
    }
    for key in _PLATFORM_FIELDS[2:]:
        if platform.get(key):
            image[key] = platform[key]
    if author:
        image["author"] = author
    return Converted(target.state, image, warnings)


#: an image config's platform fields, as OCI names them
_PLATFORM_FIELDS = ("architecture", "os", "variant", "os.version", "os.features")


def _cross(base: llb.Platform, env: Mapping[str, str]) -> str:
    """``->`` and the target a step of a stage for ``base`` builds for, as BuildKit reads it
    from the step's environment (``TARGETPLATFORM``, else ``TARGETOS``, ``TARGETARCH``,
    ``TARGETVARIANT``, each missing part the stage's); empty when it is the stage's."""
    texts = [env["TARGETPLATFORM"]] if "TARGETPLATFORM" in env else []
    if any(k in env for k in ("TARGETOS", "TARGETARCH", "TARGETVARIANT")):
        parts = [env.get("TARGETOS") or base.os, env.get("TARGETARCH") or base.architecture]
        texts.append(
            "/".join([*parts, env["TARGETVARIANT"]] if env.get("TARGETVARIANT") else parts)
        )
    for text in texts:
        try:
            os_name, arch, variant = parse_platform(text)
        except ValueError:
            continue
        if os_name != base.os:
            return "->" + "/".join(p for p in (os_name, arch, variant) if p)
        if arch != base.architecture:
            return f"->{arch}/{variant}" if variant else f"->{arch}"
        return ""
    return ""


def platform_fields(platform: llb.Platform) -> dict[str, Any]:
    """A platform as an image config (or an index) names it: the variant only when there
    is one."""
    found = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        found["variant"] = platform.variant
    return found


def _summary(doc: str) -> str:
    """A heredoc as BuildKit sums it up in a step's name: its first line, ``...`` if more."""
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


def _mount_readonly(kind: str, values: dict[str, str]) -> bool:
    """Whether a ``--mount`` is read-only (its ro and rw keys taken from ``values``): as its
    last such key says; unless one is given, a bind is and a cache or tmpfs is not."""
    readonly = kind not in ("cache", "tmpfs")
    for key in [k for k in values if k in ("readonly", "ro", "readwrite", "rw")]:
        asked = bool(parse_bool(values.pop(key)))
        readonly = asked if key in ("readonly", "ro") else not asked
    return readonly
