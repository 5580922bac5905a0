"""Differential cases of remote build contexts (``--opt context=URL``, what ``docker buildx
build https://…`` sends): a Git repository over HTTP (a branch, a tag, a subdirectory, a ref
or a folder that is not there, a repository that is not there), an archive (gzipped or not),
a lone Dockerfile, a URL that is neither; each with the options that read a remote context
(``filename``, ``contextsubdir``, ``dockerfilekey``, ``BUILDKIT_CONTEXT_KEEP_GIT_DIR``).
The server and what it serves are :func:`tests.differential.harness.serve_remote`'s."""

from __future__ import annotations

from tests.differential.harness import Case

GIT = "http://@REMOTE@/repo.git"
#: the context option's value by case name
CONTEXTS = {
    "git": GIT,
    "git-tag": f"{GIT}#v1",
    "git-subdir": f"{GIT}#main:sub",
    "git-subdir-default-branch": f"{GIT}#:sub",
    "git-tag-subdir": f"{GIT}#v1:sub",
    "git-no-ref": f"{GIT}#nope",
    "git-no-subdir": f"{GIT}#main:nope",
    "git-no-repo": "http://@REMOTE@/nope.git",
    "git-trailing-slash": f"{GIT}/",
    "tar-gz": "http://@REMOTE@/ctx.tar.gz",
    "tar": "http://@REMOTE@/ctx.tar",
    "dockerfile": "http://@REMOTE@/Dockerfile",
    "http-404": "http://@REMOTE@/nope.tar.gz",
    "not-a-url": "elsewhere",
}
#: more options, by case name, tried on a repository, an archive and a lone Dockerfile
OPTIONS = {
    "filename": {"filename": "Other.Dockerfile"},
    "filename-missing": {"filename": "Nope"},
    "filename-lower": {"filename": "lower/Dockerfile"},
    "contextsubdir": {"contextsubdir": "sub"},
    "contextsubdir-missing": {"contextsubdir": "nope"},
    "dockerfilekey": {"dockerfilekey": "dockerfile"},
}
#: the Dockerfile the client shares: what a case reads with ``dockerfilekey`` or a context
#: that is no URL
LOCAL = "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN ls -a /ctx | sort > /listed\n"
#: a Dockerfile of the client's showing whether a checkout kept its ``.git``
KEPT = (
    "ARG BASE\nFROM $BASE\n"
    "RUN --mount=target=/src test -d /src/.git && echo kept > /kept || echo no > /kept\n"
)


def _case(name: str, options: dict[str, str], dockerfile: str = LOCAL) -> Case:
    return Case(
        name=f"remote-{name}",
        category="remote",
        dockerfile=dockerfile,
        args={"BASE": "@BASE@"},
        options=options,
    )


def _cases() -> list[Case]:
    found = [_case(name, {"context": url}) for name, url in CONTEXTS.items()]
    for kind in ("git", "tar-gz", "dockerfile"):
        for name, more in OPTIONS.items():
            found.append(_case(f"{kind}-{name}", {"context": CONTEXTS[kind], **more}))
    for keep in ("1", "0"):
        options = {"context": GIT, "dockerfilekey": "dockerfile"}
        options["build-arg:BUILDKIT_CONTEXT_KEEP_GIT_DIR"] = keep
        found.append(_case(f"git-keep-git-dir-{keep}", options, KEPT))
    return found


CASES = _cases()
