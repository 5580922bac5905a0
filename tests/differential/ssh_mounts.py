"""Differential cases of ``RUN --mount=type=ssh``: the client forwards SSH agents by id
(``--ssh ID=SOCKET``), and a step mounts them at the default path or its own, with an owner
and mode, by id, required or not, one or two, as root or another user; what the step sees (its
sockets, their owner and mode, ``SSH_AUTH_SOCK``) and what is left in the image after it is
compared."""

from __future__ import annotations

from tests.differential.harness import Case

#: the agents every case's client forwards (but the "none-forwarded" ones)
AGENTS = ["default", "other"]
#: a step's view of its agents
LISTED = (
    'echo "SSH_AUTH_SOCK=$SSH_AUTH_SOCK";'
    " for p in $(find /run/buildkit /s /w -type s 2>/dev/null | sort); do"
    " stat -c '%n %a %u:%g %F' $p; done; stat -c '%n %a %u:%g' /run/buildkit 2>&1"
)


def _case(name: str, mounts: str, *, before: str = "", agents: list[str] | None = None) -> Case:
    # The case's name in its step: an agent is no part of a step's key, so BuildKit would
    # take another case's result for the same step, and never look for the agent.
    dockerfile = (
        f"FROM @BASE@\n{before}RUN {mounts} ( : {name}; {LISTED} ) > /tmp/probe 2>&1; true\n"
    )
    if "USER" in before:
        dockerfile += "USER root\n"
    dockerfile += "RUN mv /tmp/probe /probe\n"
    chosen = list(AGENTS) if agents is None else agents
    return Case(name=f"ssh-{name}", category="ssh", dockerfile=dockerfile, ssh=chosen)


def _cases() -> list[Case]:
    return [
        _case("default", "--mount=type=ssh"),
        _case("target", "--mount=type=ssh,target=/s/a"),
        _case("id", "--mount=type=ssh,id=other"),
        _case("mode-owner", "--mount=type=ssh,mode=0644,uid=1000,gid=2000"),
        _case("mode-only", "--mount=type=ssh,mode=0666"),
        _case("required-given", "--mount=type=ssh,required"),
        _case("required-missing", "--mount=type=ssh,id=nope,required"),
        _case("optional-missing", "--mount=type=ssh,id=nope"),
        _case("two", "--mount=type=ssh --mount=type=ssh,id=other"),
        _case("two-targets", "--mount=type=ssh,target=/s/b --mount=type=ssh,id=other,target=/s/a"),
        _case("env-set", "--mount=type=ssh", before="ENV SSH_AUTH_SOCK=/elsewhere\n"),
        _case("as-user", "--mount=type=ssh", before="USER builder\n"),
        _case("as-user-owned", "--mount=type=ssh,uid=1000", before="USER builder\n"),
        _case("relative-target", "--mount=type=ssh,target=rel/a", before="WORKDIR /w\n"),
        _case("source", "--mount=type=ssh,source=x"),
        _case("bad-mode", "--mount=type=ssh,mode=9"),
        _case("none-forwarded", "--mount=type=ssh", agents=[]),
        _case("none-forwarded-required", "--mount=type=ssh,required", agents=[]),
        Case(
            name="ssh-leaves-nothing",
            category="ssh",
            dockerfile="FROM @BASE@\nRUN --mount=type=ssh --mount=type=ssh,id=other,"
            "target=/deep/er/a : leaves-nothing\n",
            ssh=list(AGENTS),
        ),
    ]


CASES = _cases()
