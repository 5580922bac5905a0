"""Differential cases of ``RUN --mount=type=secret``: the client gives secrets by id
(``--secret id=ID,src=FILE``), and a step mounts them at the default path or its own, with
an owner and mode, by id or by its target's name, required or not, one or several, as root or
another user; what the step reads and lists, and what is left in the image after it, is
compared (a secret's content is written into the image on purpose, to compare it)."""

from __future__ import annotations

from tests.differential.harness import Case

#: what every case's client gives
SECRETS = {"tok": "s3cret\n", "other": "two", "dir/tok": "in a folder"}
#: a step's view of its secrets: each path's mode and owner, and its content
LISTED = (
    "for p in $(find /run/secrets /s -type f 2>/dev/null | sort); do"
    " stat -c '%n %a %u:%g' $p; cat $p; echo; done"
)


def _case(name: str, mounts: str, script: str = LISTED, before: str = "") -> Case:
    # The case's name in its step: a secret is no part of a step's key, so BuildKit would
    # take another case's result for the same step, and never read the secret.
    dockerfile = (
        f"FROM @BASE@\n{before}RUN {mounts} ( : {name}; {script} ) > /tmp/probe 2>&1; true\n"
    )
    if "USER" in before:
        dockerfile += "USER root\n"
    dockerfile += "RUN mv /tmp/probe /probe\n"
    return Case(
        name=f"secret-{name}", category="secrets", dockerfile=dockerfile, secrets=dict(SECRETS)
    )


def _cases() -> list[Case]:
    found = [
        _case("default", "--mount=type=secret,id=tok"),
        _case("target", "--mount=type=secret,id=tok,target=/s/tok"),
        _case("dst", "--mount=type=secret,id=tok,dst=/s/t"),
        _case("id-from-target", "--mount=type=secret,target=/run/secrets/tok"),
        _case("id-from-other-target", "--mount=type=secret,target=/s/other"),
        _case("mode-owner", "--mount=type=secret,id=tok,mode=0444,uid=1000,gid=2000"),
        _case("mode-only", "--mount=type=secret,id=tok,mode=0640"),
        _case("required-given", "--mount=type=secret,id=tok,required"),
        _case("required-true", "--mount=type=secret,id=tok,required=true"),
        _case("optional-missing", "--mount=type=secret,id=nope"),
        _case("required-missing", "--mount=type=secret,id=nope,required"),
        _case("two", "--mount=type=secret,id=tok --mount=type=secret,id=other"),
        _case("same-twice", "--mount=type=secret,id=tok --mount=type=secret,id=tok,target=/s/x"),
        _case(
            "relative-target",
            "--mount=type=secret,id=tok,target=rel/tok",
            script="cat /rel/tok /w/rel/tok",
            before="WORKDIR /w\n",
        ),
        _case(
            "as-user",
            "--mount=type=secret,id=tok",
            script="cat /run/secrets/tok; id -u",
            before="USER builder\n",
        ),
        _case(
            "as-user-owned",
            "--mount=type=secret,id=tok,uid=1000",
            script="cat /run/secrets/tok; id -u",
            before="USER builder\n",
        ),
        _case(
            "over-a-file",
            "--mount=type=secret,id=tok,target=/etc/group",
            script="cat /etc/group",
        ),
        _case("bad-mode", "--mount=type=secret,id=tok,mode=abc"),
        _case("bad-uid", "--mount=type=secret,id=tok,uid=x"),
        _case("bad-required", "--mount=type=secret,id=tok,required=maybe"),
        _case("source-and-id", "--mount=type=secret,id=tok,source=a.txt"),
        _case("source-is-the-id", "--mount=type=secret,source=tok"),
        _case("source-is-the-id-target", "--mount=type=secret,src=other,target=/s/o"),
        _case("id-with-folder", "--mount=type=secret,id=dir/tok"),
        _case("none-named", "--mount=type=secret,required=false"),
        _case("from", "--mount=type=secret,id=tok,from=@BASE@"),
        _case("readonly", "--mount=type=secret,id=tok,ro", script="touch /run/secrets/tok"),
    ]
    # What a secret leaves in the image: nothing (its mount point, made for it, goes too).
    found.append(
        Case(
            name="secret-leaves-nothing",
            category="secrets",
            dockerfile=(
                "FROM @BASE@\nRUN --mount=type=secret,id=tok --mount=type=secret,id=other,"
                "target=/deep/er/s true\n"
            ),
            secrets=dict(SECRETS),
        )
    )
    return found


CASES = _cases()
