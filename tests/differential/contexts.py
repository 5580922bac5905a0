"""Differential cases of named contexts (``--opt context:NAME=VALUE``, what buildx bake's
``contexts`` send): each kind of value (an image by tag, by digest, of several platforms,
``scratch``, malformed ones) against each use of the name
(``FROM``, ``FROM … AS`` with steps, ``COPY --from``, ``RUN --mount from=``, a stage of that
name, the image's other spellings) and a key for one platform (``NAME::linux/amd64``)."""

from __future__ import annotations

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


def _cases() -> list[Case]:
    found = []
    for value_name, value in VALUES.items():
        for use, dockerfile in USES.items():
            found.append(
                Case(
                    name=f"contexts-{value_name}-{use}",
                    category="contexts",
                    dockerfile=dockerfile,
                    options={"context:base": value},
                )
            )
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


CASES = _cases()
