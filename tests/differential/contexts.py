"""Differential cases of named contexts (``--opt context:NAME=VALUE``, what buildx bake's
``contexts`` send): each kind of value (an image by tag, by digest, of several platforms,
``scratch``, malformed ones) against each use of the name
(``FROM``, ``FROM … AS`` with steps, ``COPY --from``, ``RUN --mount from=``, a stage of that
name, the image's other spellings) and a key for one platform (``NAME::linux/amd64``); and
contexts the client shares: a local directory (``local:NAME``, its own ``.dockerignore``
applied) and an OCI layout (``oci-layout://STORE@DIGEST``, an image or an index), well formed
or not, shared or not, against the same uses; and remote ones: a Git repository (its
``.git`` kept), at a tag and in a folder, malformed, and a file downloaded over HTTP; and
definitions the client passes (``input:KEY``, what buildx bake sends for a ``target:``
context), with an image config in ``input-metadata:KEY`` or not, and as the build's own
context or Dockerfile."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from tests.differential.harness import Case

#: the context's value by case name
VALUES = {
    "image": "docker-image://@BASE@",
    "multi": "docker-image://@MULTI@",
    # busybox's manifest as the harness pushes it
    "pinned": "docker-image://@BASE@@sha256:"
    "860d981939085ccf65f71d6dcd144085166671f362c0f7d47bbc31a2420e0683",
    "scratch": "docker-image://scratch",
    "bogus-kind": "bogus://x",
    "no-kind": "nocolon",
}
#: the Dockerfile by case name; ``base`` is the context's name
USES = {
    "from": "FROM base\nRUN cat /arch > /seen || echo none > /seen\n",
    "from-as": "FROM base AS b\nRUN echo built > /b\nFROM b\nRUN cat /b > /seen\n",
    "copy-from": "FROM @BASE@\nCOPY --from=base /bin/busybox /copied\n",
    "mount-from": "FROM @BASE@\nRUN --mount=from=base,target=/m ls /m > /listed\n",
    "stage-named": "FROM @MULTI@ AS base\nRUN echo stage > /stage\nFROM base\nRUN ls / > /seen\n",
}


def _product(
    prefix: str,
    values: Mapping[str, Any],
    uses: Mapping[str, str],
    fields: Callable[[str, Any], dict[str, Any]],
) -> list[Case]:
    """A case of each value under each use, named ``PREFIX-VALUE-USE``; ``fields(name,
    value)`` gives its other fields."""
    return [
        Case(
            name=f"{prefix}-{name}-{use}",
            category="contexts",
            dockerfile=dockerfile,
            **fields(name, value),
        )
        for name, value in values.items()
        for use, dockerfile in uses.items()
    ]


def _cases() -> list[Case]:
    found = _product("contexts", VALUES, USES, lambda _, v: {"options": {"context:base": v}})
    # The name as the Dockerfile spells the image: tagged, with its registry, and a key for
    # one platform.
    for n, (dockerfile, key) in enumerate(
        [
            ("FROM @MULTI@:latest\nRUN cat /arch > /seen\n", "context:@MULTI@"),
            ("FROM @MULTI@\nRUN cat /arch > /seen\n", "context:@MULTI@:latest"),
            ("FROM base\nRUN cat /arch > /seen\n", "context:base::linux/amd64"),
            ("FROM Base\nRUN cat /arch > /seen\n", "context:base"),
        ]
    ):
        found.append(
            Case(
                name=f"contexts-spelling-{n}",
                category="contexts",
                dockerfile=dockerfile,
                options={key: "docker-image://@NOAMD@" if n else "docker-image://@BASE@"},
            )
        )
    return found


#: busybox's manifest and library/multi's index, as the harness pushes them
BUSYBOX = "sha256:860d981939085ccf65f71d6dcd144085166671f362c0f7d47bbc31a2420e0683"
MULTI = "sha256:3705cf0857f546f4f839cb575a75be396ac91a3956fd970b11ef347a26c25ffe"
ABSENT = "sha256:" + "0" * 64

#: a local directory's files by case name (what ``--local dir=…`` shares)
DIRS = {
    "plain": {"a.txt": "a\n", "sub/b.txt": "b\n"},
    "ignoring": {
        "a.txt": "a\n",
        "sub/b.txt": "b\n",
        "secret.txt": "s\n",
        ".dockerignore": "secret.txt\nsub\n",
    },
    "only-a": {"a.txt": "a\n", "sub/b.txt": "b\n", ".dockerignore": "*\n!a.txt\n"},
    "ignore-ignore": {"a.txt": "a\n", ".dockerignore": ".dockerignore\n"},
}
#: uses of a context that is a directory, not an image
DIR_USES = {
    "from": "FROM base\n",
    "copy-from": "FROM @BASE@\nCOPY --from=base / /got/\n",
    "mount-from": "FROM @BASE@\nRUN --mount=from=base,target=/m find /m | sort > /listed\n",
    "stage-named": "FROM @BASE@ AS base\nRUN echo stage > /stage\nFROM @BASE@\n"
    "COPY --from=base / /got/\n",
    "from-as": "FROM base AS b\nFROM @BASE@\nCOPY --from=b / /got/\n",
}
#: an OCI layout context's value by case name (the layout is shared as ``store``)
LAYOUTS = {
    "image": f"oci-layout://store@{BUSYBOX}",
    "index": f"oci-layout://store@{MULTI}",
    "no-digest": "oci-layout://store",
    "tag": "oci-layout://store:latest",
    "bad-name": f"oci-layout://Store@{BUSYBOX}",
    "absent": f"oci-layout://store@{ABSENT}",
    "unshared": f"oci-layout://other@{BUSYBOX}",
}


def _shared_cases() -> list[Case]:
    found = _product(
        "contexts-local",
        DIRS,
        DIR_USES,
        lambda _, files: {"options": {"context:base": "local:dir"}, "locals": {"dir": files}},
    )
    # A directory the client does not share, and one given for one platform.
    found.append(
        Case(
            name="contexts-local-unshared",
            category="contexts",
            dockerfile=DIR_USES["copy-from"],
            options={"context:base": "local:nodir"},
        )
    )
    found.append(
        Case(
            name="contexts-local-platform-key",
            category="contexts",
            dockerfile=DIR_USES["copy-from"],
            options={"context:base::linux/amd64": "local:dir"},
            locals={"dir": DIRS["ignoring"]},
        )
    )
    found += _product(
        "contexts-layout",
        LAYOUTS,
        USES,
        lambda n, v: {
            "options": {"context:base": v},
            "layouts": {"store": "@MULTI@" if n == "index" else "@BASE@"},
        },
    )
    return found


#: a remote named context's value by case name (the harness's loopback server), and the
#: uses tried on it: what a checkout holds but its ``.git`` (whose files Git writes its own way)
REMOTES = {
    "git": "http://@REMOTE@/repo.git",
    "git-tag-subdir": "http://@REMOTE@/repo.git#v1:sub",
    "git-bad": "git:nothing",
    "https-file": "http://@REMOTE@/ctx.tar",
}
REMOTE_USES = {
    "copy-from": "FROM @BASE@\nCOPY --from=base / /got/\nRUN rm -rf /got/.git\n",
    "mount-from": "FROM @BASE@\nRUN --mount=from=base,target=/m ls -a /m | sort > /listed\n",
    "from-as": "FROM base AS b\nFROM @BASE@\nCOPY --from=b / /got/\nRUN rm -rf /got/.git\n",
    "stage-named": "FROM @BASE@ AS base\nRUN echo stage > /stage\nFROM @BASE@\n"
    "RUN --mount=from=base,target=/m ls -a /m | sort > /listed\n",
}


def _remote_cases() -> list[Case]:
    return _product(
        "contexts-remote", REMOTES, REMOTE_USES, lambda _, v: {"options": {"context:base": v}}
    )


def _metadata(config: dict[str, object]) -> str:
    """``input-metadata:KEY`` naming an image config, as buildx sends it (Go's JSON of a map
    of bytes: base64 values)."""
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return json.dumps({"containerimage.config": encoded})


#: an input's image config: its own environment, working directory and command
INPUT_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin", "FROM_INPUT=1"], "WorkingDir": "/w", "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": []},
}
#: a frontend input's options and inputs by case name (``context:base=input:KEY``)
INPUTS = {
    "run": ({}, {"in": "busybox-run"}),
    "run-image": ({"input-metadata:in": _metadata(INPUT_CONFIG)}, {"in": "busybox-run"}),
    "files": ({}, {"in": "files"}),
    "missing": ({}, {"other": "files"}),
    "bad-metadata": ({"input-metadata:in": "{nope"}, {"in": "files"}),
    "metadata-without-config": ({"input-metadata:in": json.dumps({"x": "eA=="})}, {"in": "files"}),
}
#: the uses of an input that is an image
IMAGE_USES = {
    **DIR_USES,
    # What the input's image config gives a RUN (the whole environment would include what
    # BuildKit's Go client adds for tracing, which buildctl does not).
    "run-on": 'FROM base\nRUN echo "$FROM_INPUT:$PATH:$HOME" > /env && pwd > /pwd\n',
}
#: the Dockerfile the client shares when inputs are the build's context or Dockerfile
LISTING = "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN ls -a /ctx | sort > /listed\n"
#: the build's own context and Dockerfile passed as inputs (``context``, ``dockerfile``)
BUILD_INPUTS = {
    "context": ({}, {"context": "files"}),
    "dockerfile": ({}, {"dockerfile": "dockerfile"}),
    "both": ({}, {"context": "files", "dockerfile": "dockerfile"}),
    "dockerfilekey": ({"dockerfilekey": "dockerfile"}, {"dockerfile": "dockerfile"}),
    "context-subdir": ({"contextsubdir": "d"}, {"context": "files"}),
    # contextsubdir scopes no context of the client's: BuildKit takes it whole
    "local-subdir": ({"contextsubdir": "dir"}, {}),
}


def _input_cases() -> list[Case]:
    found = []
    for input_name, (options, inputs) in INPUTS.items():
        uses = IMAGE_USES if input_name.startswith("run") else DIR_USES
        for use, dockerfile in uses.items():
            found.append(
                Case(
                    name=f"contexts-input-{input_name}-{use}",
                    category="contexts",
                    dockerfile=dockerfile,
                    options={"context:base": "input:in", **options},
                    inputs=inputs,
                )
            )
    for name, (options, inputs) in BUILD_INPUTS.items():
        found.append(
            Case(
                name=f"contexts-build-input-{name}",
                category="contexts",
                dockerfile=LISTING,
                args={"BASE": "@BASE@"},
                options=options,
                inputs=inputs,
            )
        )
    return found


CASES = _cases() + _shared_cases() + _remote_cases() + _input_cases()
