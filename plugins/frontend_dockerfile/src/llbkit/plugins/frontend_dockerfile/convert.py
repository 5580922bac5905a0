"""A parsed Dockerfile turned into LLB and an image config, instruction by instruction."""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

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
    snippet,
)
from llbkit.plugins.frontend_dockerfile.shell import (
    ExpansionError,
    ExpansionLimitError,
    expand,
    expand_heredoc,
    split_words,
)
from llbkit.sdk import llb

__all__ = ["BuildOptions", "Converted", "convert"]

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What variable expansion may make in one Dockerfile, all words and RUN environments together.
MAX_EXPANDED = 32 << 20
ImageResolver = Callable[[str, llb.Platform], Awaitable[tuple[str, bytes]]]


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
    build_platform: llb.Platform = field(default_factory=lambda: llb.Platform("linux", "amd64"))
    no_cache: bool = False
    dockerignore: list[str] = field(default_factory=list)
    contexts: dict[str, str] = field(default_factory=dict)
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)
    network: str = ""
    hostname: str = ""
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)
    cgroup_parent: str = ""
    #: the client directory the build context is read from (``--opt contextkey=``)
    context_key: str = "context"


@dataclass
class Converted:
    state: llb.State
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


#: the instructions BuildKit numbers as steps (with FROM an image)
_STEPS = frozenset({"ADD", "COPY", "RUN", "WORKDIR"})


@dataclass
class _Stage:
    index: int
    name: str
    base: str
    platform: str
    instructions: list[Instruction]
    state: llb.State | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    cmd_set: bool = False
    declared: list[str] = field(default_factory=list)
    #: the stage's steps as BuildKit numbers them in progress (``[stage 2/4]``), and how many
    #: have been named
    steps: int = 0
    stepped: int = 0


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
    def __init__(self, parsed: Parsed, options: BuildOptions, resolve: ImageResolver) -> None:
        self.parsed = parsed
        self.options = options
        self.resolve = resolve
        self.escape = parsed.escape
        self.filename = options.filename
        self.stages: list[_Stage] = []
        self.meta_args: dict[str, str] = dict(
            _platform_args(options.platform, options.build_platform)
        )
        self.context = llb.local(
            options.context_key,
            exclude_patterns=options.dockerignore,
            shared_key_hint=options.context_key,
            custom_name="[internal] load build context",
        )
        self.expanded = 0
        self.now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

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
        return snippet(self.parsed.text, self.filename, inst.line, inst.end_line)

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
        current: _Stage | None = None
        for inst in self.parsed.instructions:
            if inst.keyword == "FROM":
                flags = self.flags(inst, {"platform"})
                words = [
                    self.word(inst, w, self.meta_args) for w in split_words(inst.rest, self.escape)
                ]
                if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                    raise self.fail(inst, "FROM requires either one or three arguments")
                name = words[2].lower() if len(words) == 3 else ""
                if name and any(s.name == name for s in self.stages):
                    raise self.fail(inst, f"duplicate stage name {name!r}")
                current = _Stage(
                    len(self.stages),
                    name,
                    words[0],
                    self.word(inst, flags.get("platform", ""), self.meta_args),
                    [inst],
                )
                self.stages.append(current)
            elif current is None:
                if inst.keyword != "ARG":
                    raise self.fail(inst, "no build stage in current context (expected FROM)")
                for word in split_words(inst.rest, self.escape):
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
            raise DockerfileError(f"{self.filename}: no build stage in current context")

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
        state: dict[int, int] = {}

        def visit(n: int) -> None:
            state[n] = 1
            for m in deps[n]:
                if state.get(m) == 1:
                    stage = self.stages[m]
                    raise DockerfileError(
                        f"circular dependency detected on stage: {self.label(stage) or m}"
                    )
                if m not in state:
                    visit(m)
            state[n] = 2

        for stage in self.stages:
            if stage.index not in state:
                visit(stage.index)

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
                f"target stage {self.options.target!r} could not be found (stages: {names})"
            )
        return found

    def label(self, stage: _Stage) -> str:
        return stage.name or (f"stage-{stage.index}" if len(self.stages) > 1 else "")

    def from_is_a_step(self, stage: _Stage) -> bool:
        """As BuildKit counts: ``FROM`` an image is a step; ``FROM`` scratch or a stage is not."""
        if self.options.contexts.get(stage.base):
            return True
        parent = self.stage_named(stage.base)
        if parent is not None and parent.index < stage.index:
            return False
        return stage.base.lower() != "scratch"

    def step(self, stage: _Stage) -> str:
        """The next step's prefix, ``[label n/total] `` as BuildKit pads it (none when the
        stage has no steps)."""
        if not stage.steps:
            return ""
        stage.stepped += 1
        width = len(str(stage.steps))
        label = self.label(stage)
        return f"[{label + ' ' if label else ''}{stage.stepped:>{width}}/{stage.steps}] "

    async def build(self, stage: _Stage, visiting: tuple[str, ...] = ()) -> _Stage:
        if stage.state is not None:
            return stage
        key = self.label(stage) or "stage-0"
        if key in visiting:
            raise DockerfileError(
                f"circular dependency detected on stage: {key} ({' -> '.join((*visiting, key))})"
            )
        visiting = (*visiting, key)
        # Only what makes a step is numbered: FROM an image, ADD, COPY, RUN, WORKDIR.
        stage.steps = int(self.from_is_a_step(stage)) + sum(
            inst.keyword in _STEPS for inst in stage.instructions[1:]
        )
        await self.base(stage, visiting)
        await self.triggers(stage, visiting)
        for inst in stage.instructions[1:]:
            handler = getattr(self, f"do_{inst.keyword.lower()}")
            prefix = self.step(stage) if inst.keyword in _STEPS else ""
            await handler(stage, inst, prefix, visiting)
        return stage

    async def triggers(self, stage: _Stage, visiting: tuple[str, ...]) -> None:
        """Run the base's ONBUILD instructions first; they do not pass further down."""
        from llbkit.plugins.frontend_dockerfile.parser import parse

        triggers = stage.config.pop("OnBuild", None) or []
        for text in triggers:
            for inst in parse(text, self.filename).instructions:
                if inst.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise self.fail(inst, f"{inst.keyword} isn't allowed as an ONBUILD trigger")
                handler = getattr(self, f"do_{inst.keyword.lower()}")
                await handler(stage, inst, f"[{self.label(stage) or 'stage'} onbuild] ", visiting)

    async def base(self, stage: _Stage, visiting: tuple[str, ...]) -> None:
        inst = stage.instructions[0]
        named = self.options.contexts.get(stage.base, "")
        if named.startswith("docker-image://"):
            stage.base = named.removeprefix("docker-image://")
        elif named:
            stage.state = self.named_context(stage.base, inst)
            stage.config = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}
            stage.env = {"PATH": DEFAULT_PATH}
            return
        parent = self.stage_named(stage.base)
        if parent is not None and parent.index < stage.index:
            await self.build(parent, visiting)
            assert parent.state is not None
            stage.state = parent.state
            stage.config = json.loads(json.dumps(parent.config))
            stage.history = list(parent.history)
            stage.env = dict(parent.env)
            stage.shell = list(parent.shell)
            return
        if stage.base.lower() == "scratch":
            stage.state = llb.scratch()
            stage.config = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}
            stage.env = {"PATH": DEFAULT_PATH}
            return
        platform = self.options.platform
        try:
            digest, raw = await self.resolve(stage.base, platform)
        except Exception as err:  # the registry's message names the image
            raise self.fail(inst, str(err)) from None
        image = json.loads(raw)
        config = image.get("config") or {}
        stage.config = config
        stage.history = list(image.get("history") or [])
        for item in config.get("Env") or []:
            key, _, value = item.partition("=")
            stage.env[key] = value
        stage.shell = list(config.get("Shell") or DEFAULT_SHELL)
        # As BuildKit names it: the normalized reference, pinned to what it resolved to.
        from llbkit.core.reference import parse_reference

        ref = parse_reference(stage.base, default_tag=False)
        tag = f":{ref.tag}" if ref.tag else ""
        name = f"{self.step(stage)}FROM {ref.name}{tag}@{digest}"
        state = llb.image(stage.base, custom_name=name)
        for key, value in stage.env.items():
            state = state.with_env(key, value)
        if config.get("WorkingDir"):
            state = state.with_dir(config["WorkingDir"])
        if config.get("User"):
            state = state.with_user(config["User"])
        stage.state = state

    # -- helpers -------------------------------------------------------------------------

    def flags(self, inst: Instruction, allowed: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for flag in inst.flags:
            name, sep, value = flag[2:].partition("=")
            if name not in allowed:
                raise self.parse_fail(inst, f"unknown flag: {name}")
            if name in ("mount", "exclude"):
                found[name] = found[name] + "\n" + value if name in found else value
            else:
                found[name] = value if sep else "true"
        return found

    def scope(self, stage: _Stage) -> dict[str, str]:
        """What expansion sees in a stage: its ARGs, then its ENV over them."""
        return {**stage.args, **stage.env}

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
        return {**{k: v for k, v in stage.args.items() if k not in stage.env}, **stage.env}

    def source_state(self, stage: _Stage, ref: str, inst: Instruction) -> llb.State:
        if ref in self.options.contexts:
            return self.named_context(ref, inst)
        found = self.stage_named(ref)
        if found is not None:
            if found.index > stage.index:
                # BuildKit v0.11 reads a later stage as still empty; so does llbkit.
                return llb.scratch()
            assert found.state is not None, "stages are built before they are read"
            return found.state
        from llbkit.core.reference import parse_reference

        try:
            parse_reference(ref)
        except Exception:
            reason = (
                "repository name must be lowercase"
                if ref.lower() != ref
                else "invalid reference format"
            )
            raise self.fail(
                inst, f'failed to parse stage name "{ref}": invalid reference format: {reason}'
            ) from None
        return llb.image(ref)

    def named_context(self, name: str, inst: Instruction) -> llb.State:
        """``--opt context:NAME=…``: an image, an OCI layout, or another local directory."""
        value = self.options.contexts[name]
        if value.startswith("docker-image://"):
            return llb.image(value.removeprefix("docker-image://"))
        if value.startswith("oci-layout://"):
            return llb.oci_layout(value.removeprefix("oci-layout://"))
        if value.startswith("local:"):
            return llb.local(value.removeprefix("local:"))
        raise self.fail(
            inst,
            f"unsupported named context {name}={value!r} (docker-image://, oci-layout:// "
            "or local:)",
        )

    # -- instructions --------------------------------------------------------------------

    async def do_run(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        flags = self.flags(inst, {"mount", "network", "security"})
        assert stage.state is not None
        if inst.json is not None:
            args = inst.json
            shown = " ".join(inst.json)
        else:
            command = inst.rest
            if len(inst.heredocs) == 1 and command.strip().lstrip("0123456789") in (
                f"<<{inst.heredocs[0].name}",
                f"<<-{inst.heredocs[0].name}",
                f'<<"{inst.heredocs[0].name}"',
                f"<<'{inst.heredocs[0].name}'",
            ):
                command = inst.heredocs[0].content
            elif inst.heredocs:
                # The heredocs stay part of the script, for the shell to read.
                command += "\n" + "\n".join(f"{h.content}{h.name}" for h in inst.heredocs)
            args = [*stage.shell, command]
            shown = " ".join([*stage.shell, command])
        mounts = []
        for spec in filter(None, flags.get("mount", "").split("\n")):
            mounts.append(await self.mount(stage, inst, spec, visiting))
        network = {"": "sandbox", "default": "sandbox", "none": "none", "host": "host"}.get(
            flags.get("network", "")
        )
        if network is None:
            raise self.fail(inst, f"invalid network mode {flags['network']!r}")
        state = stage.state
        for key, value in self.run_env(stage).items():
            self.spend(inst, len(key) + len(value))
            state = state.with_env(key, value)
        state = self.sandbox(state, stage)
        if self.options.network and network == "sandbox":
            network = self.options.network
        options: dict[str, Any] = {
            "custom_name": f"{prefix}{_shown(inst)}",
            "description": {"llbkit.source": self.snippet(inst)},
        }
        if network != "sandbox":
            options["network"] = network
        if flags.get("security") == "insecure":
            options["security"] = "insecure"
        if self.options.no_cache:
            options["ignore_cache"] = True
        result = state.run(args=args, mounts=mounts, **options).root()
        # Build args are the step's environment, not the stage's.
        stage.state = replace(result, env=stage.state.env)
        # As BuildKit's history shows it: the build args the step saw, then the command.
        seen = [
            f"{k}={stage.env.get(k, stage.args.get(k, ''))}" for k in dict.fromkeys(stage.declared)
        ]
        with_args = f"|{len(seen)} {' '.join(seen)} " if seen else ""
        self.record(stage, f"RUN {with_args}{shown} # buildkit", False)

    def sandbox(self, state: llb.State, stage: _Stage) -> llb.State:
        """The frontend options every RUN gets: hosts, hostname, ulimits, cgroup parent."""
        for host, ip in self.options.extra_hosts:
            state = state.with_extra_host(host, ip)
        hostname = stage.args.get("BUILDKIT_SANDBOX_HOSTNAME") or self.options.hostname
        if hostname:
            state = state.with_hostname(hostname)
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
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if key == "from":
                values[key] = value
            else:
                values[key] = self.word(inst, value, self.scope(stage)) if sep else "true"
        problem = mount_value_error(values)
        if problem:
            raise self.fail(inst, problem)
        kind = values.pop("type", "bind")
        target = values.pop("target", values.pop("dst", values.pop("destination", "")))
        if not target and kind == "secret":
            target = f"/run/secrets/{values.get('id', '')}"
        if not target and kind != "ssh":
            raise self.fail(inst, f"mount type={kind} needs a target")
        if target and not target.startswith("/"):
            target = posixpath.join(stage.config.get("WorkingDir") or "/", target)
        source = values.pop("source", values.pop("src", ""))
        rw = bool(parse_bool(values.pop("readwrite", values.pop("rw", "false"))))
        values.pop("readonly", values.pop("ro", ""))
        origin = values.pop("from", "")
        if origin:
            found = self.stage_named(origin)
            if found is not None and found.index < stage.index:
                await self.build(found, visiting)
        base = self.source_state(stage, origin, inst) if origin else None
        if kind == "bind":
            return llb.Bind(
                target, base or self.context, selector=source, readonly=not rw, output=False
            )
        if kind == "cache":
            sharing = values.get("sharing", "shared").lower()  # checked: mount_value_error
            return llb.Cache(
                target,
                id=values.get("id") or target,
                sharing=sharing,  # type: ignore[arg-type]
                source=base,
            )
        if kind == "tmpfs":
            return llb.Tmpfs(target, size=ram_in_bytes(values.get("size", "0")) or 0)
        if kind == "secret":
            sid = values.get("id") or posixpath.basename(target)
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
                id=values.get("id", "default"),
                dest=target,
                mode=int(values.get("mode", "0600"), 8),
                uid=int(values.get("uid", "0")),
                gid=int(values.get("gid", "0")),
                optional=not parse_bool(values.get("required", "false")),
            )
        raise self.fail(inst, f"unsupported mount type {kind!r}")

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
        words = inst.json if inst.json is not None else split_words(inst.rest, self.escape)
        words = [self.word(inst, w, scope) for w in words] if inst.json is None else list(words)
        if len(words) < 2:  # a heredoc is one of the two: `COPY <<EOF` names no destination
            raise self.parse_fail(
                inst,
                f"{inst.keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined",
            )
        dest = words[-1]
        sources = words[:-1]
        heredocs = {f"<<{h.name}": h for h in inst.heredocs} | {
            f"<<-{h.name}": h for h in inst.heredocs
        }
        if len([s for s in sources if s not in heredocs]) > 1 and not dest.endswith("/"):
            raise self.fail(
                inst,
                "When using COPY with more than one source file, the destination must be "
                "a directory and end with a /",
            )
        workdir = stage.config.get("WorkingDir") or "/"
        if not dest.startswith("/"):
            dest = posixpath.join(workdir, dest) + ("/" if dest.endswith("/") else "")
        origin = flags.get("from", "")  # not expanded, as in BuildKit v0.11
        if origin:
            found = self.stage_named(origin)
            if found is not None and found.index < stage.index:
                await self.build(found, visiting)
        src_state = self.source_state(stage, origin, inst) if origin else self.context
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
        name = f"{prefix}{_shown(inst)}"
        source = {"llbkit.source": self.snippet(inst)}
        if flags.get("link") == "true":
            stage.state = llb.merge(
                [stage.state, llb.scratch().file(action, custom_name=name, description=source)]
            )
        else:
            stage.state = stage.state.file(action, custom_name=name, description=source)
        # History shows the expanded arguments, without the flags.
        self.record(stage, f"{inst.keyword} {' '.join(words)} # buildkit", False)

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
        for src in sources:
            if src in heredocs:
                doc = heredocs[src]
                content = self.heredoc(inst, doc.content, scope) if doc.expand else doc.content
                name = posixpath.basename(dest.rstrip("/")) if not dest.endswith("/") else doc.name
                # BuildKit writes heredoc files 0664 unless --chmod says otherwise.
                here = llb.scratch().file(llb.mkfile("/" + name, mode or 0o664, content.encode()))
                action = _copy(action, here, "/" + name, dest, owner=chown, create_dest_path=True)
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
        pairs = self.pairs(stage, inst, legacy=True)
        for key, value in pairs:
            stage.env[key] = value
            assert stage.state is not None
            stage.state = stage.state.with_env(key, value)
        stage.config["Env"] = [f"{k}={v}" for k, v in stage.env.items()]
        self.record(stage, "ENV " + " ".join(f"{k}={v}" for k, v in pairs), True)

    def pairs(self, stage: _Stage, inst: Instruction, *, legacy: bool) -> list[tuple[str, str]]:
        words = split_words(inst.rest, self.escape)
        scope = self.scope(stage)
        if legacy and words and "=" not in words[0]:
            key, _, value = inst.rest.strip().partition(" ")
            if not value.strip():
                raise self.fail(inst, f"{inst.keyword} must have two arguments")
            return [(key, self.word(inst, value.strip(), scope))]
        for word in words:
            if "=" not in word:
                raise self.fail(
                    inst,
                    f'Syntax error - can\'t find = in "{word}". Must be of the form: name=value',
                )
        found = []
        for word in words:
            key, _, value = word.partition("=")
            found.append((self.word(inst, key, scope), self.word(inst, value, scope)))
        return found

    async def do_arg(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        for word in split_words(inst.rest, self.escape):
            key, sep, default = word.partition("=")
            value = self.options.build_args.get(key)
            if value is None and sep:
                value = self.word(inst, default, self.scope(stage))
            if value is None and key in self.meta_args:
                value = self.meta_args[key]
            if value is not None:
                stage.args[key] = value
            stage.declared.append(key)
            self.record(stage, f"ARG {word}", True)

    async def do_workdir(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        path = self.word(inst, inst.rest.strip(), self.scope(stage))
        current = stage.config.get("WorkingDir") or "/"
        path = posixpath.normpath(posixpath.join(current, path))
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
            custom_name=f"{prefix}WORKDIR {inst.rest.strip()}",
        )
        self.record(stage, f"WORKDIR {path}", False)

    async def do_user(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        user = self.word(inst, inst.rest.strip(), self.scope(stage))
        stage.config["User"] = user
        assert stage.state is not None
        stage.state = stage.state.with_user(user)
        self.record(stage, f"USER {user}", True)

    async def do_label(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        pairs = self.pairs(stage, inst, legacy=True)
        labels = stage.config.setdefault("Labels", {}) or {}
        stage.config["Labels"] = labels
        labels.update(dict(pairs))
        self.record(stage, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), True)

    async def do_expose(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        ports = stage.config.get("ExposedPorts") or {}
        for word in split_words(inst.rest, self.escape):
            port = self.word(inst, word, self.scope(stage))
            ports[port if "/" in port else f"{port}/tcp"] = {}
        stage.config["ExposedPorts"] = ports
        shown = " ".join(f"{p}:{{}}" for p in sorted(ports))
        self.record(stage, f"EXPOSE map[{shown}]", True)

    async def do_volume(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        words = inst.json if inst.json is not None else split_words(inst.rest, self.escape)
        volumes = stage.config.get("Volumes") or {}
        for word in words:
            volumes[self.word(inst, word, self.scope(stage))] = {}
        stage.config["Volumes"] = volumes
        self.record(stage, f"VOLUME [{' '.join(volumes)}]", True)

    def command(self, stage: _Stage, inst: Instruction) -> list[str]:
        if inst.json is not None:
            return list(inst.json)
        return [*stage.shell, inst.rest]

    async def do_cmd(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["Cmd"] = self.command(stage, inst)
        stage.cmd_set = True
        self.record(stage, f"CMD {_go_list(stage.config['Cmd'])}", True)

    async def do_entrypoint(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["Entrypoint"] = self.command(stage, inst)
        if not stage.cmd_set:
            stage.config["Cmd"] = None  # an inherited CMD does not survive a new ENTRYPOINT
        self.record(stage, f"ENTRYPOINT {_go_list(stage.config['Entrypoint'])}", True)

    async def do_shell(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        if inst.json is None:
            raise self.parse_fail(inst, "SHELL requires the arguments to be in JSON form")
        stage.shell = list(inst.json)
        stage.config["Shell"] = list(inst.json)
        self.record(stage, f"SHELL [{' '.join(inst.json)}]", True)

    async def do_stopsignal(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["StopSignal"] = self.word(inst, inst.rest.strip(), self.scope(stage))
        self.record(stage, f"STOPSIGNAL {stage.config['StopSignal']}", True)

    async def do_healthcheck(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        flags = self.flags(
            inst, {"interval", "timeout", "start-period", "retries", "start-interval"}
        )
        keyword, _, rest = inst.rest.strip().partition(" ")
        if keyword.upper() == "NONE":
            stage.config["Healthcheck"] = {"Test": ["NONE"]}
        elif keyword.upper() == "CMD":
            try:
                decoded = json.loads(rest)
            except ValueError:
                decoded = None
            test = ["CMD", *decoded] if isinstance(decoded, list) else ["CMD-SHELL", rest.strip()]
            check: dict[str, Any] = {"Test": test}
            for flag, key in (
                ("interval", "Interval"),
                ("timeout", "Timeout"),
                ("start-period", "StartPeriod"),
                ("start-interval", "StartInterval"),
            ):
                if flag in flags:
                    check[key] = _duration_ns(flags[flag])
            if "retries" in flags:
                check["Retries"] = int(flags["retries"])
            stage.config["Healthcheck"] = check
        else:
            raise self.fail(inst, "HEALTHCHECK needs CMD or NONE")
        self.record(stage, f"HEALTHCHECK {_go_health(stage.config['Healthcheck'])}", True)

    async def do_onbuild(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        triggers = stage.config.get("OnBuild") or []
        triggers.append(inst.rest.strip())
        stage.config["OnBuild"] = triggers

    async def do_maintainer(
        self, stage: _Stage, inst: Instruction, prefix: str, visiting: tuple[str, ...]
    ) -> None:
        stage.config["__author"] = inst.rest.strip()
        self.record(stage, f"MAINTAINER {inst.rest.strip()}", True)

    async def do_from(self, *args: Any) -> None:
        raise AssertionError("FROM starts a stage")


def _is_git_ref(src: str) -> bool:
    """A git repository reference, as BuildKit's ParseGitRef recognizes one."""
    if src.startswith(("git@", "git://", "ssh://")):
        return True
    return src.startswith(("http://", "https://")) and bool(re.search(r"\.git(?:#.+)?$", src))


def _shown(inst: Instruction) -> str:
    """The instruction as progress names it: keyword, flags and arguments as written."""
    return inst.keyword + inst.original[len(inst.original.split(None, 1)[0]) :]


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


def _go_duration(ns: int) -> str:
    """Go's ``time.Duration`` string (``30s``, ``1m30s``, ``0s``)."""
    seconds = ns / 1e9
    if seconds == 0:
        return "0s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if hours or minutes else ""
    return text + f"{secs + (seconds - int(seconds)):g}s"


def _go_health(check: dict[str, Any]) -> str:
    """BuildKit records a HEALTHCHECK as Go's ``%q`` of its config struct."""
    retries = int(check.get("Retries", 0))
    quoted = f"'{chr(retries)}'" if 32 <= retries < 127 else f"'\\x{retries:02x}'"
    parts = [_go_list(check["Test"])] + [
        json.dumps(_go_duration(int(check.get(k, 0))))
        for k in ("Interval", "Timeout", "StartPeriod")
    ]
    return "&{" + " ".join([*parts, quoted]) + "}"


def _duration_ns(text: str) -> int:
    from llbkit.core.units import parse_duration

    return int(parse_duration(text, "HEALTHCHECK") * 1e9)


async def convert(parsed: Parsed, options: BuildOptions, resolve: ImageResolver) -> Converted:
    """The target stage's LLB state and the image config (with history) the exporters write."""
    converter = _Converter(parsed, options, resolve)
    converter.split()
    converter.check_cycles()
    target = await converter.build(converter.target())
    declared = set(converter.meta_args) | {
        name for stage in converter.stages for name in stage.declared
    }
    unused = sorted(set(options.build_args) - declared)
    # Docker's wording, a Go slice: [A B]
    listed = "[" + " ".join(unused) + "]"
    warnings = [f"One or more build-args {listed} were not consumed"] if unused else []
    assert target.state is not None
    config = dict(target.config)
    author = config.pop("__author", None)
    config.setdefault("Env", [f"PATH={DEFAULT_PATH}"])
    if options.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **options.labels}
    platform = options.platform
    image: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {k: v for k, v in config.items() if v is not None},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": target.history,
    }
    if platform.variant:
        image["variant"] = platform.variant
    if author:
        image["author"] = author
    return Converted(target.state, image, warnings)
