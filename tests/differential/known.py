"""Cases where llbkit differs from BuildKit v0.11.6. KNOWN: not fixed yet, each with the
difference named; the replay marks them xfail (strict: a case that starts passing must leave
the list). DELIBERATE: differences on purpose (docs/compatibility.md says why); the replay
checks that llbkit gives what it says instead, so a deliberate difference cannot drift."""

from __future__ import annotations

from dataclasses import dataclass

from tests.differential.contexts import DIR_USES, USES

_CONTEXT_USES = tuple(USES)
_DIR_USES = tuple(DIR_USES)

_LINK_ERROR = (
    "a Dockerfile that is a symlink to nothing or to a folder: llbkit says `open Dockerfile: "
    "no such file or directory`; BuildKit names the link's target (`open nope: ...`) or says "
    "`read real: is a directory`"
)
KNOWN: dict[str, str] = {
    f"hand-inputs-{layout}-link-{kind}": _LINK_ERROR
    for layout in ("one", "two")
    for kind in ("dangling", "directory")
}


@dataclass(frozen=True)
class Deliberate:
    """llbkit's own answer to a case: the error it reports (a part of its text), or ``""``
    when llbkit builds what BuildKit refuses."""

    why: str
    error: str


_EMPTY_PLATFORMS = Deliberate(
    "a build for several platforms whose every result is empty (FROM scratch with config "
    "alone) is an index of empty images; BuildKit v0.11 refuses to export it ('cannot export "
    "multiple platforms without multi-platform enabled'), later BuildKit writes the index",
    "",
)
_ABSENT = "0" * 64
#: what the client does not share, or has not, named in llbkit's words with the flag to give;
#: BuildKit passes on its session's gRPC errors ("no access allowed to dir", "unknown store")
_UNSHARED = {
    "contexts-local-unshared": (
        "the build reads local directory 'nodir', which was not given (use --local nodir=<path>"
    ),
    **{
        f"contexts-layout-unshared-{use}": (
            "the build reads OCI layout 'other', which was not given (use --oci-layout "
            "other=<path>)"
        )
        for use in _CONTEXT_USES
    },
    **{
        f"contexts-layout-absent-{use}": f"OCI layout store: blob sha256:{_ABSENT} is not there"
        for use in _CONTEXT_USES
    },
}
_GIT_SOURCE = "failed to read dockerfile: [internal] load git source http://REMOTE/"
#: a remote context that cannot be fetched, said as llbkit's git and http sources say it (the
#: step, the reference, what is missing), after BuildKit's "failed to read …" prefix
_REMOTE_FAILURES = {
    "remote-git-no-ref": f"{_GIT_SOURCE}repo.git#nope: git://REMOTE/repo.git#nope: ref 'nope' "
    "not found in http://REMOTE/repo.git",
    "remote-git-no-subdir": f"{_GIT_SOURCE}repo.git#main:nope: git://REMOTE/repo.git#main:nope: "
    "subdirectory 'nope' not found",
    "remote-git-no-repo": f"{_GIT_SOURCE}nope.git: git://REMOTE/nope.git: git ls-remote: fatal: "
    "repository 'http://REMOTE/nope.git/' not found",
    "remote-http-404": "failed to read downloaded context: [internal] load remote build context: "
    "http://REMOTE/nope.tar.gz: invalid response status 404",
}
_BAD_METADATA = Deliberate(
    "input metadata that is no JSON is refused with the JSON parser's own words, Python's "
    "('Expecting property name enclosed in double quotes') where BuildKit's are Go's "
    "('invalid character 'n' looking for beginning of object key string')",
    "failed to parse input metadata {nope: Expecting property name enclosed in double quotes",
)
DELIBERATE: dict[str, Deliberate] = {
    **{f"contexts-input-bad-metadata-{use}": _BAD_METADATA for use in _DIR_USES},
    **{
        name: Deliberate(
            "a remote context that cannot be fetched is said in the words of llbkit's git and "
            "http sources, naming the step, the reference and what is missing; BuildKit says "
            "'failed to load cache key: repository does not contain ref nope', 'invalid "
            "response status 404'",
            error,
        )
        for name, error in _REMOTE_FAILURES.items()
    },
    **{
        name: Deliberate(
            "a named context the client does not share, or a blob its OCI layout lacks, is "
            "said in llbkit's words, naming the flag that shares it; BuildKit passes on its "
            "session's gRPC error",
            error,
        )
        for name, error in _UNSHARED.items()
    },
    **{
        f"platforms-scratch-{stage}-multi": _EMPTY_PLATFORMS
        for stage in ("none", "buildplatform", "targetplatform", "arm64", "armv7")
    },
    "hand-run-security-bad": Deliberate(
        "RUN --security is read (BuildKit's labs syntax; v0.11's built-in frontend says "
        "'unknown flag: security'), so a bad mode is refused as a bad mode",
        "dockerfile parse error on line 2: unsupported security mode bogus",
    ),
    "sandbox-refused-insecure": Deliberate(
        "RUN --security is read (BuildKit's labs syntax), so insecure asks for the "
        "security.insecure entitlement, which the build was not given",
        "security.insecure is not allowed",
    ),
    "sandbox-security-sandbox": Deliberate(
        "RUN --security is read (BuildKit's labs syntax): sandbox is the default sandbox, "
        "seccomp filter and all",
        "",
    ),
    "sandbox-run-mount-cache-uid": Deliberate(
        "a cache mount that starts from an input (uid, gid or mode asked for, or from=) is a "
        "directory made from that input and bind-mounted; BuildKit mounts an overlay on the "
        "input, so /proc/mounts names another type (the same files, modes and owners)",
        "",
    ),
    "hand-add-git-ref": Deliberate(
        "ADD of a Git repository is read (BuildKit's labs syntax; v0.11's built-in frontend "
        "says 'instruction ADD <git ref> requires the labs channel'), so Dockerfiles written "
        "for later releases build",
        "",
    ),
    "add-url-missing": Deliberate(
        "a URL that answers 404 is said with BuildKit's words and the URL, where BuildKit says "
        "'failed to load cache key: invalid response status 404'",
        "http://REMOTE/nope.tar.gz: invalid response status 404",
    ),
    "hand-options-unknown-key": Deliberate(
        "a frontend option dockerfile.v0 does not know is refused by name (a typo in --opt is "
        "caught); BuildKit ignores it. What clients send for other parts of BuildKit (buildx's "
        "vcs:source, buildctl's cache-imports, requestid) is taken",
        "frontend dockerfile.v0: unknown option 'nosuchoption'",
    ),
    "hand-copy-chmod-bad": Deliberate(
        "an invalid COPY --chmod is refused; BuildKit v0.11 ignores it silently",
        "Dockerfile:2: invalid chmod parameter 'abc'",
    ),
}
