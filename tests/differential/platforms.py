"""Differential cases of the platform a stage is built for: ``FROM --platform`` (plain, from
the automatic platform ARGs, from a meta ARG given or defaulted, invalid, empty, one the image
lacks) against each target platform (``--opt platform``: one, two, or none), on an index of three
platforms, an index without this machine's, an image of one other platform, ``scratch``, a
named context that is an image, and a stage made from another stage. A case shows which
platform's image a stage got (its ``/arch`` and config), what ``TARGETPLATFORM`` said in it,
and the config's platform."""

from __future__ import annotations

from tests.differential.harness import Case

#: FROM's --platform value by case name ("" for none)
STAGE_PLATFORMS = {
    "none": "",
    "buildplatform": "$BUILDPLATFORM",
    "targetplatform": "$TARGETPLATFORM",
    "arm64": "linux/arm64",
    "armv7": "linux/arm/v7",
    "amd64": "linux/amd64",
    "aarch64": "linux/aarch64",
    "metaarg": "${PLAT}",
    "metaarg-cli": "${PLAT}",
    "bogus": "bogus",
    "unset": "$UNSET",
    "windows": "windows/amd64",
}
#: --opt platform by case name ("" for none)
TARGETS = {
    "default": "",
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "armv7": "linux/arm/v7",
    "multi": "linux/amd64,linux/arm64",
}
#: the stage platforms and targets of the smaller shapes
FEW_STAGE_PLATFORMS = ("none", "buildplatform", "targetplatform", "arm64", "armv7", "bogus")
FEW_TARGETS = ("default", "arm64", "multi")

SHAPES = {
    # the target stage itself
    "final": (
        "ARG PLAT=linux/arm/v7\nFROM {flag}@MULTI@\nARG TARGETPLATFORM\n"
        'RUN (cat /arch; echo "$TARGETPLATFORM") > /seen\n'
    ),
    # a stage the target copies from: the cross-compiling pattern
    "cross": (
        "ARG PLAT=linux/arm/v7\nFROM {flag}@MULTI@ AS build\nARG TARGETARCH\n"
        'RUN (cat /arch; echo "$TARGETARCH") > /built\n'
        "FROM @MULTI@\nCOPY --from=build /built /built\n"
    ),
    "scratch": "ARG PLAT=linux/arm/v7\nFROM {flag}scratch\nENV A=1\n",
    "armonly": "FROM {flag}@ARMONLY@\nRUN cat /arch > /seen\n",
    "noamd": "FROM {flag}@NOAMD@\nRUN cat /arch > /seen\n",
    # a named context that is an image (--opt context:base=docker-image://…)
    "context": "FROM {flag}base\nRUN cat /arch > /seen\n",
    # a stage on a stage: its own --platform is not the parent's
    "child": (
        "ARG PLAT=linux/arm/v7\nFROM {flag}@MULTI@ AS parent\n"
        "FROM --platform=linux/amd64 parent\nRUN cat /arch > /child\n"
    ),
}


def _cases() -> list[Case]:
    found = []
    for shape, text in SHAPES.items():
        full = shape in ("final", "cross")
        for stage, value in STAGE_PLATFORMS.items():
            if not full and stage not in FEW_STAGE_PLATFORMS:
                continue
            for target, platform in TARGETS.items():
                if not full and target not in FEW_TARGETS:
                    continue
                flag = f"--platform={value} " if value else ""
                found.append(
                    Case(
                        name=f"platforms-{shape}-{stage}-{target}",
                        category="platforms",
                        dockerfile=text.format(flag=flag),
                        args={"PLAT": "linux/arm64"} if stage == "metaarg-cli" else {},
                        options={
                            **({"platform": platform} if platform else {}),
                            **(
                                {"context:base": "docker-image://@MULTI@"}
                                if shape == "context"
                                else {}
                            ),
                        },
                    )
                )
    return found


CASES = _cases()
