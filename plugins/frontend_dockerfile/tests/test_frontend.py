"""The dockerfile.v0 frontend end to end on in-memory files, and convert on its own."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

import anyio
import pytest

from llbkit.core.errors import UserError
from llbkit.core.llb import pb
from llbkit.plugins.frontend_dockerfile import frontend
from llbkit.plugins.frontend_dockerfile.convert import BuildOptions, convert
from llbkit.plugins.frontend_dockerfile.frontend import DockerfileFrontend
from llbkit.plugins.frontend_dockerfile.parser import DockerfileError, Parsed, parse
from llbkit.sdk import llb
from llbkit.sdk.testing import FrontendKit, make_context

#: many instruction kinds (flags, JSON and shell forms, a heredoc, ONBUILD, stages)
DOCKERFILE = """\
FROM scratch AS base
ARG WHO=world
SHELL ["/bin/sh", "-c"]
COPY --chown=1:1 a.txt b.txt /app/
COPY <<GREETING /greeting
hello $WHO
GREETING
ONBUILD COPY a.txt /onbuild/
ENV GREETING="hello"
LABEL a=b
EXPOSE 80
VOLUME ["/data"]
WORKDIR /app
USER 1000
ENTRYPOINT ["/bin/app", "--flag"]
CMD ["serve"]

FROM base AS final
COPY --from=base /app /copied
HEALTHCHECK --interval=5s CMD ["check"]
CMD run it
"""


class _Client:
    """A FrontendClient over in-memory contexts: ``files[(context, path)]``."""

    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files = files
        self.warnings: list[str] = []
        self.steps: list[str] = []
        self.step_warnings: list[tuple[str, str, object]] = []

    async def read_file(self, context: str, path: str, **_: object) -> bytes:
        try:
            return self.files[context, path]
        except KeyError:
            raise UserError(f"{context}: no file {path}") from None

    async def read_files(self, context: str, paths: list[str], **_: object) -> dict[str, bytes]:
        return {p: self.files[context, p] for p in paths if (context, p) in self.files}

    async def solve(self, definition: bytes) -> object:
        raise AssertionError("the dockerfile frontend does not solve")

    @property
    def images(self) -> object:
        raise AssertionError("no image to resolve here")

    def inputs(self) -> dict[str, bytes]:
        return {}

    def warn(self, message: str, **fields: object) -> None:
        self.warnings.append(message)

    @contextlib.asynccontextmanager
    async def step(self, name: str, key: str = "") -> AsyncIterator[object]:
        self.steps.append(name)
        yield _StepSink(name, self.step_warnings)


class _StepSink:
    def __init__(self, name: str, warnings: list[tuple[str, str, object]]) -> None:
        self.name = name
        self.warnings = warnings

    def status(self, id: str, **fields: object) -> None:
        pass

    def warn(self, message: str, **fields: object) -> None:
        self.warnings.append((self.name, message, fields.get("url")))


async def _no_images(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    raise AssertionError(f"no image to resolve here: {ref}")


def _local_sources(data: bytes) -> list[pb.SourceOp]:
    definition = pb.Definition.FromString(data)
    ops = [pb.Op.FromString(raw) for raw in getattr(definition, "def")]
    return [
        op.source
        for op in ops
        if op.WhichOneof("op") == "source" and op.source.identifier.startswith("local://")
    ]


def _solve(attrs: dict[str, str], files: dict[tuple[str, str], bytes]) -> dict[str, bytes]:
    async def scenario() -> dict[str, bytes]:
        job = await DockerfileFrontend(make_context("dockerfile.v0")).resolve(attrs)
        return dict((await job.solve(_Client(files))).definitions)

    return anyio.run(scenario)


def test_convert_reads_the_context_from_the_context_key() -> None:
    parsed = parse("FROM scratch\nCOPY . /app\n")
    converted = anyio.run(convert, parsed, BuildOptions(context_key="foo"), _no_images)
    data = converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes()
    assert [s.identifier for s in _local_sources(data)] == ["local://foo"]


#: what the context's ``local.followpaths`` says (None: no attribute), as BuildKit v0.11.6's
#: frontend sets it: the context paths COPY, ADD and RUN mounts of built stages read, cleaned and
#: sorted; none at all when one of them is the whole context
FOLLOW_PATHS = [
    ("FROM scratch\nCOPY b.txt a.txt dir/ /d/\n", '["a.txt","b.txt","dir"]'),
    ("FROM scratch\nCOPY ./x/../y /d/\nADD /z* /d/\n", '["y","z*"]'),
    ("FROM scratch\nCOPY a.txt /d/\nCOPY . /d/\n", None),
    ("FROM scratch\nARG F=a.txt\nCOPY ${F} /d/\n", '["a.txt"]'),
    ("FROM scratch\nCOPY a<b&c /d/\n", '["a\\u003cb\\u0026c"]'),
    ("FROM scratch\nADD https://example.com/x f /d/\n", '["f"]'),
    ("FROM scratch\nCOPY <<EOF a /d/\nhi\nEOF\n", '["a"]'),
    ("FROM scratch AS b\nCOPY a /a\nFROM scratch\nCOPY --from=b /a /b\n", '["a"]'),
    ("FROM scratch AS unused\nCOPY x /x\nFROM scratch\nCOPY a /a\n", '["a"]'),
    ("FROM scratch\nRUN --mount=type=bind,source=src,target=/s true\n", '["src"]'),
    ("FROM scratch\nRUN --mount=type=bind,target=/s true\nCOPY a /a\n", None),
    ("FROM scratch\nRUN --mount=type=tmpfs,target=/t true\nCOPY a /a\n", None),
    ("FROM scratch\nRUN --mount=type=cache,target=/c true\nCOPY a /a\n", '["a"]'),
    ("FROM scratch\nRUN --mount=type=secret,id=s true\nCOPY a /a\n", '["a"]'),
]


@pytest.mark.parametrize(("dockerfile", "expected"), FOLLOW_PATHS)
def test_the_context_follows_the_paths_the_build_reads(
    dockerfile: str, expected: str | None
) -> None:
    converted = anyio.run(convert, parse(dockerfile), BuildOptions(), _no_images)
    data = converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes()
    definition = pb.Definition.FromString(data)
    (local,) = _local_sources(data)
    assert local.attrs.get("local.followpaths") == expected
    caps = {cap for meta in definition.metadata.values() for cap in meta.caps}
    assert ("source.local.followpaths" in caps) == (expected is not None)


#: cache mounts' ids as BuildKit v0.11.6's frontend makes them (its dockerfile2llb says so):
#: the BUILDKIT_CACHE_MOUNT_NS namespace, "/", the id or else the target as written, cleaned
CACHE_IDS = [
    ("target=/root/.cache", {}, "//root/.cache"),
    ("id=foo,target=/c", {}, "/foo"),
    ("target=rel/./x", {}, "/rel/x"),
    ("target=/c", {"BUILDKIT_CACHE_MOUNT_NS": "proj"}, "proj//c"),
    ("id=foo,target=/c", {"BUILDKIT_CACHE_MOUNT_NS": "proj"}, "proj/foo"),
]


@pytest.mark.parametrize(("flags", "args", "expected"), CACHE_IDS)
def test_a_cache_mount_is_named_as_buildkit_names_it(
    flags: str, args: dict[str, str], expected: str
) -> None:
    parsed = parse(f"FROM scratch\nWORKDIR /w\nRUN --mount=type=cache,{flags} true\n")
    converted = anyio.run(convert, parsed, BuildOptions(build_args=args), _no_images)
    data = converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes()
    ops = [pb.Op.FromString(op) for op in getattr(pb.Definition.FromString(data), "def")]
    ids = [m.cacheOpt.ID for op in ops if op.HasField("exec") for m in op.exec.mounts]
    assert [i for i in ids if i] == [expected]


@pytest.mark.parametrize(("attrs", "expected"), [({}, "context"), ({"contextkey": "foo"}, "foo")])
def test_contextkey_names_the_local_source(attrs: dict[str, str], expected: str) -> None:
    files = {
        ("dockerfile", "Dockerfile"): b"FROM scratch\nCOPY . /app\n",
        (expected, ".dockerignore"): b"*.log\n",
    }
    definitions = _solve({**attrs, "platform": "linux/amd64,linux/arm64"}, files)
    assert len(definitions) == 2
    for data in definitions.values():
        (local,) = _local_sources(data)
        assert local.identifier == f"local://{expected}"
        assert local.attrs["local.sharedkeyhint"] == expected
        assert local.attrs["local.excludepatterns"] == '["*.log"]'


def test_the_dockerfile_is_parsed_once_for_every_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(text: str, filename: str = "Dockerfile") -> Parsed:
        calls.append(filename)
        return parse(text, filename)

    monkeypatch.setattr(frontend, "parse", counting)
    files = {("dockerfile", "Dockerfile"): DOCKERFILE.encode()}
    definitions = _solve({"platform": "linux/amd64,linux/arm64,linux/arm/v7"}, files)
    assert len(definitions) == 3
    assert calls == ["Dockerfile"]


def test_convert_leaves_the_parsed_dockerfile_unchanged() -> None:
    parsed = parse(DOCKERFILE)
    before = copy.deepcopy(parsed)
    configs = []
    for platform in (llb.Platform("linux", "amd64"), llb.Platform("linux", "arm64")):
        options = BuildOptions(platform=platform, platforms=[platform], build_args={"WHO": "x"})
        configs.append(anyio.run(convert, parsed, options, _no_images).config)
        assert parsed == before
    assert configs[0]["config"] == configs[1]["config"]
    assert [c["architecture"] for c in configs] == ["amd64", "arm64"]


def test_options_without_effect_are_said_to_have_none() -> None:
    client = _Client({("dockerfile", "Dockerfile"): b"FROM scratch\n"})

    async def scenario() -> None:
        attrs = {"contextsubdir": "x", "attest:sbom": "", "target": "", "vcs:source": "y"}
        job = await DockerfileFrontend(make_context("dockerfile.v0")).resolve(attrs)
        await job.solve(client)

    anyio.run(scenario)
    assert client.warnings == [
        "frontend option attest:sbom has no effect in this release of llbkit",
        "frontend option contextsubdir scopes a Git, HTTP or input context: the client's "
        "directory is the context here, whole",
    ]


class TestDockerfileFrontend(FrontendKit):
    """The frontend kit: the engine's own frontend client, solves and image resolver."""

    frontend_class = DockerfileFrontend
    valid_attrs: ClassVar[dict[str, str]] = {"build-arg:GREETING": "hi", "target": "final"}
    files: ClassVar[Mapping[str, Mapping[str, bytes]]] = {
        "dockerfile": {
            "Dockerfile": b"FROM scratch AS base\nARG GREETING\nCOPY greeting.txt /\n"
            b"FROM base AS final\nLABEL kit=yes\n"
        },
        "context": {"greeting.txt": b"hello\n"},
    }


async def _empty_image(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    return "sha256:" + "0" * 64, b'{"config": {}}'


def _names(data: bytes) -> list[str]:
    definition = pb.Definition.FromString(data)
    return sorted(
        meta.description["llb.customname"]
        for meta in definition.metadata.values()
        if "llb.customname" in meta.description
    )


def test_steps_are_numbered_as_buildkit_numbers_them() -> None:
    """Only FROM an image, ADD, COPY, RUN and WORKDIR are steps; FROM a stage or scratch is
    not; the index is padded to the total's width."""
    dockerfile = (
        "FROM busybox AS builder\nARG A=1\nENV B=2\nLABEL c=d\nWORKDIR /w\nRUN true\n"
        "FROM builder AS tester\nCMD x\nRUN false\n"
        "FROM scratch\nCOPY --from=builder /w /w\n"
        + "".join(f"COPY --from=builder /w /w{n}\n" for n in range(9))
    )
    converted = anyio.run(convert, parse(dockerfile), BuildOptions(target=""), _empty_image)
    names = _names(converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes())
    assert f"[builder 1/3] FROM docker.io/library/busybox@sha256:{'0' * 64}" in names
    assert "[builder 2/3] WORKDIR /w" in names
    assert "[builder 3/3] RUN true" in names
    assert "[stage-2  1/10] COPY --from=builder /w /w" in names
    assert "[stage-2 10/10] COPY --from=builder /w /w8" in names
    tester = anyio.run(convert, parse(dockerfile), BuildOptions(target="tester"), _empty_image)
    names = _names(tester.state.marshal(llb.Platform("linux", "amd64")).to_bytes())
    assert "[tester 1/1] RUN false" in names


def test_heredoc_steps_are_named_as_buildkit_names_them() -> None:
    """A RUN of one heredoc carries the script's first line (``...`` when more follow), and
    the file a heredoc is written to comes from ``[internal] preparing inline document``."""
    dockerfile = (
        "FROM scratch\n"
        "RUN <<EOF\necho a > /a\necho b\nEOF\n"
        "RUN <<-EOF\n\t\nEOF\n"
        "RUN <<EOF\n#!/bin/sh\necho c\nEOF\n"
        "COPY <<EOF /f\nx\nEOF\n"
        "RUN <<A cat && <<B cat\na\nA\nb\nB\n"
        "ARG V=v\nRUN <<'EOF'\necho $V\nEOF\n"
    )
    converted = anyio.run(convert, parse(dockerfile), BuildOptions(target=""), _empty_image)
    names = _names(converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes())
    assert names == [
        "[1/6] RUN <<EOF (echo a > /a...)",
        "[2/6] RUN <<-EOF ()",
        "[3/6] RUN <<EOF (#!/bin/sh...)",
        "[4/6] COPY <<EOF /f",
        "[5/6] RUN <<A cat && <<B cat",  # two heredocs: the shell reads them, as written
        "[6/6] RUN <<'EOF' (echo v)",  # the name's variables expanded, as the line's are
        "[internal] preparing inline document",
        "[internal] preparing inline document",
    ]


def _ignored(data: bytes) -> list[str]:
    definition = pb.Definition.FromString(data)
    return sorted(
        meta.description.get("llb.customname", "")
        for meta in definition.metadata.values()
        if meta.ignore_cache
    )


@pytest.mark.parametrize(
    ("attrs", "ignored"),
    [
        ({}, []),
        (
            {"no-cache": ""},
            [
                "[stage-0 1/2] COPY a.txt /",
                "[stage-0 2/2] ADD a.txt /b",
                "[stage-1 1/1] COPY --from=0 /x /y",
            ],
        ),
    ],
)
def test_no_cache_runs_copy_and_add_anew_too(attrs: dict[str, str], ignored: list[str]) -> None:
    """As BuildKit's --no-cache: COPY and ADD are run again, not only RUN (a COPY found in the
    cache would otherwise leave the steps below it cached)."""
    dockerfile = b"FROM scratch\nCOPY a.txt /\nADD a.txt /b\nFROM scratch\nCOPY --from=0 /x /y\n"
    files = {("dockerfile", "Dockerfile"): dockerfile, ("context", "a.txt"): b"a"}
    found = _solve(attrs, files)
    assert _ignored(next(iter(found.values()))) == ignored


@pytest.mark.parametrize(
    ("dockerfile", "prefix"),
    [
        ("FROM busybox\nRUN true\n", "[1/2]"),
        # A mount's source (scratch without from=) is a build state of its own to BuildKit
        # v0.11: with it there are two, and the one stage is named.
        ("FROM busybox\nRUN --mount=type=cache,target=/c true\n", "[stage-0 1/2]"),
        ("FROM busybox\nRUN --mount=type=secret,id=s true\n", "[stage-0 1/2]"),
        ("FROM busybox AS b\nRUN --mount=type=tmpfs,target=/t true\n", "[b 1/2]"),
        ("FROM busybox\nCOPY --from=alpine /x /y\n", "[stage-0 1/2]"),
        ("FROM busybox AS b\nFROM b\nRUN --mount=from=b,target=/m true\n", "[stage-1 1/1]"),
    ],
)
def test_a_stage_is_named_as_buildkit_counts_build_states(dockerfile: str, prefix: str) -> None:
    """Checked beside BuildKit v0.11.6's progress for the same Dockerfiles."""
    converted = anyio.run(convert, parse(dockerfile), BuildOptions(target=""), _empty_image)
    names = _names(converted.state.marshal(llb.Platform("linux", "amd64")).to_bytes())
    assert any(name.startswith(prefix + " ") for name in names), names


_THREE_BASES = (
    "FROM alpha AS a\nRUN echo a\n"
    "FROM beta AS b\nRUN echo b\n"
    "FROM gamma AS unused\n"
    "FROM a\nCOPY --from=b / /b\n"
)


def test_the_needed_stages_images_are_resolved_at_once() -> None:
    """As BuildKit resolves every reachable stage's image before it converts one: the
    resolutions overlap (each here waits until both have started), and an image no needed
    stage names is not asked for."""
    asked: list[str] = []
    both = anyio.Event()

    async def resolve(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
        asked.append(ref)
        if len(asked) == 2:
            both.set()
        with anyio.fail_after(5):  # one at a time never gets here twice
            await both.wait()
        return "sha256:" + "0" * 64, b'{"config": {}}'

    anyio.run(convert, parse(_THREE_BASES), BuildOptions(), resolve)
    assert sorted(asked) == ["alpha", "beta"]


def test_the_first_image_that_fails_is_the_error_and_the_others_are_cancelled() -> None:
    """As BuildKit: the first resolution to fail is said with its own FROM line, and the
    others still under way are cancelled."""
    finished: list[str] = []

    async def resolve(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
        if "beta" in ref:
            raise UserError(f"{ref}: not found")
        await anyio.sleep(0.5)
        finished.append(ref)
        return "sha256:" + "0" * 64, b'{"config": {}}'

    with pytest.raises(DockerfileError) as failed:
        anyio.run(convert, parse(_THREE_BASES), BuildOptions(), resolve)
    assert str(failed.value).startswith("beta: beta: not found")
    assert ">>> FROM beta AS b" in failed.value.source
    assert finished == []


def test_the_parsers_warnings_show_under_the_step_that_read_the_dockerfile() -> None:
    """As BuildKit shows them: ``Empty continuation line found in: …`` under ``[internal]
    load build definition``, with the pull request that explains it."""
    client = _Client({("dockerfile", "Dockerfile"): b"FROM scratch\nENV A=1 \\\n\n  B=2\n"})
    job = anyio.run(DockerfileFrontend(make_context("dockerfile.v0")).resolve, {})
    anyio.run(job.solve, client)
    assert client.step_warnings == [
        (
            "[internal] load build definition from Dockerfile",
            "Empty continuation line found in: ENV A=1   B=2",
            "https://github.com/moby/moby/pull/33719",
        )
    ]


def test_a_dockerfile_without_instructions_shows_its_lines() -> None:
    client = _Client({("dockerfile", "Dockerfile"): b"# only a comment\n"})
    job = anyio.run(DockerfileFrontend(make_context("dockerfile.v0")).resolve, {})
    with pytest.raises(DockerfileError, match="Dockerfile:1: file with no instructions") as info:
        anyio.run(job.solve, client)
    assert ">>> # only a comment" in info.value.source


def test_build_args_the_frontend_reads_itself_are_not_unconsumed() -> None:
    """BuildKit's own build args (BUILDKIT_*, SOURCE_DATE_EPOCH) and Docker's predefined
    proxies need no ARG: only the others are said to be unused."""
    client = _Client({("dockerfile", "Dockerfile"): b"FROM scratch\n"})
    own = ("BUILDKIT_SANDBOX_HOSTNAME", "BUILDKIT_CACHE_MOUNT_NS", "SOURCE_DATE_EPOCH")
    attrs = {f"build-arg:{k}": "1" for k in (*own, "HTTP_PROXY", "no_proxy", "Ftp_Proxy", "FOO")}

    async def scenario() -> None:
        job = await DockerfileFrontend(make_context("dockerfile.v0")).resolve(attrs)
        await job.solve(client)

    anyio.run(scenario)
    assert client.warnings == ["One or more build-args [FOO] were not consumed"]
