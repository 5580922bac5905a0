"""Generated differential cases: hypothesis strategies over the Dockerfile grammar (words with
quotes, escapes and variables; instructions with their flags and forms; continuations,
comments and case; heredocs; stages), drawn from a recorded seed."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.differential.harness import Case

NAMES = ["A", "B", "lower", "_u", "V1"]
PLAIN = st.sampled_from(["x", "abc", "1", "a-b", "a.b", "/p", "a:b", "é", "@", "%", "~", ","])


def _var(name: str, form: str, word: str) -> str:
    return form.replace("N", name).replace("W", word)


VAR = st.builds(
    _var,
    st.sampled_from([*NAMES, "UNSET", "1", "@", "#", "?", "$", "!", "*", "-"]),
    st.sampled_from(["$N", "${N}", "${N:-W}", "${N-W}", "${N:+W}", "${N+W}"]),
    st.sampled_from(["d", "", "a b", "$A", "${B}", "'q'", '"q"', "\\}"]),
)
ESCAPED = st.sampled_from(["\\$A", "\\ ", "\\\\", '\\"', "\\'", "\\x", "$$", "\\"])
PIECE = st.one_of(PLAIN, VAR, ESCAPED)
WORD_BODY = st.lists(PIECE, min_size=1, max_size=4).map("".join)
WORD = st.one_of(
    WORD_BODY,
    WORD_BODY.map(lambda w: '"' + w.replace('"', "") + '"'),
    st.lists(PLAIN, min_size=1, max_size=3).map(lambda p: "'" + " ".join(p) + "'"),
    st.tuples(WORD_BODY, WORD_BODY).map(lambda t: t[0] + '"' + t[1].replace('"', "") + '"'),
)
DEFINE = st.builds(
    lambda kind, name, value: f"{kind} {name}={value}",
    st.sampled_from(["ARG", "ENV"]),
    st.sampled_from(NAMES),
    st.one_of(PLAIN, WORD),
)


@st.composite
def expansion_case(draw: st.DrawFn) -> tuple[str, str]:
    lines = ["FROM scratch"]
    lines += draw(st.lists(DEFINE, max_size=3))
    pairs = draw(st.lists(WORD, min_size=1, max_size=3))
    use = draw(st.sampled_from(["ENV", "LABEL", "ENV-old", "WORKDIR", "USER", "STOPSIGNAL"]))
    if use == "ENV":
        lines.append("ENV " + " ".join(f"K{i}={w}" for i, w in enumerate(pairs)))
    elif use == "LABEL":
        lines.append("LABEL " + " ".join(f"k{i}={w}" for i, w in enumerate(pairs)))
    elif use == "ENV-old":
        lines.append("ENV K " + " ".join(pairs))
    else:
        lines.append(f"{use} /{pairs[0]}" if use == "WORKDIR" else f"{use} {pairs[0]}")
    return "expansion", "\n".join(lines) + "\n"


SIMPLE = st.one_of(
    st.builds(lambda v: f"ENV A={v}", PLAIN),
    st.builds(lambda v: f"LABEL l={v}", PLAIN),
    st.builds(lambda v: f"EXPOSE {v}", st.sampled_from(["80", "80/udp", "1-3", "8080/tcp 9"])),
    st.builds(lambda v: f"VOLUME {v}", st.sampled_from(["/v", '["/w"]', "/a /b"])),
    st.builds(lambda v: f"WORKDIR {v}", st.sampled_from(["/w", "rel", "/w/../z"])),
    st.builds(lambda v: f"USER {v}", st.sampled_from(["1", "1:2", "root"])),
    st.builds(lambda v: f"CMD {v}", st.sampled_from(["echo x", '["a", "b"]', "[]"])),
    st.builds(lambda v: f"ENTRYPOINT {v}", st.sampled_from(["top", '["e"]'])),
    st.builds(lambda v: f"SHELL {v}", st.sampled_from(['["/bin/sh", "-c"]', '["x"]'])),
    st.builds(lambda v: f"STOPSIGNAL {v}", st.sampled_from(["SIGINT", "15"])),
    st.builds(lambda v: f"ARG {v}", st.sampled_from(["A", "A=1", "A=1 B=2", "B="])),
    st.builds(lambda v: f"ONBUILD {v}", st.sampled_from(["RUN x", "ENV A=1", "LABEL a=b"])),
    st.builds(
        lambda v: f"HEALTHCHECK {v}",
        st.sampled_from(["NONE", "CMD x", "--retries=2 CMD x", '--timeout=3s CMD ["y"]']),
    ),
    st.just("MAINTAINER someone"),
)


def _continued(line: str, how: str) -> str:
    """``line`` with a continuation, a comment line, odd case or spacing put into it."""
    keyword, _, rest = line.partition(" ")
    if how == "lower":
        return keyword.lower() + " " + rest
    if how == "tab":
        return keyword + "\t" + rest
    if how == "continue" and " " in rest:
        head, _, tail = rest.partition(" ")
        return f"{keyword} {head} \\\n  {tail}"
    if how == "comment" and " " in rest:
        head, _, tail = rest.partition(" ")
        return f"{keyword} {head} \\\n# a comment\n {tail}"
    if how == "blank" and " " in rest:
        head, _, tail = rest.partition(" ")
        return f"{keyword} {head} \\\n\n {tail}"
    if how == "indent":
        return "   " + line
    return line


@st.composite
def parser_case(draw: st.DrawFn) -> tuple[str, str]:
    lines = [draw(st.sampled_from(["FROM scratch", "from scratch", "FROM scratch AS one"]))]
    for line in draw(st.lists(SIMPLE, min_size=1, max_size=5)):
        how = draw(st.sampled_from(["", "lower", "tab", "continue", "comment", "blank", "indent"]))
        lines.append(_continued(line, how))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# c", "  # indented", "#"])))
    return "parser", "\n".join(lines) + "\n"


@st.composite
def instructions_case(draw: st.DrawFn) -> tuple[str, str]:
    base = draw(st.sampled_from(["scratch", "@BASE@", "@NOPATH@", "@RICH@"]))
    lines = [f"FROM {base}"]
    lines += draw(st.lists(SIMPLE, min_size=1, max_size=6))
    category = "config" if draw(st.booleans()) else "history"
    return category, "\n".join(lines) + "\n"


SOURCES = st.sampled_from(
    ["a.txt", "b.txt", "*.txt", "dir", "dir/", "dir/*", "?1", "[!a]*", "[^b].txt", "link", "c.md"]
)
DEST = st.sampled_from(["/", "/d/", "d/", "/d", ".", "/x/y/"])
COPY_FLAGS = st.lists(
    st.sampled_from(
        ["--chown=1:2", "--chown=builder", "--chmod=600", "--chmod=0755", "--link", "--chown=0"]
    ),
    max_size=2,
    unique=True,
)


@st.composite
def copy_case(draw: st.DrawFn) -> tuple[str, str]:
    base = draw(st.sampled_from(["scratch", "@BASE@"]))
    lines = [f"FROM {base}"]
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["WORKDIR /w", "WORKDIR rel", "USER 7"])))
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["COPY", "ADD"]))
        flags = [f for f in draw(COPY_FLAGS) if base != "scratch" or "builder" not in f]
        sources = draw(st.lists(SOURCES, min_size=1, max_size=2, unique=True))
        dest = draw(DEST)
        lines.append(" ".join([kind, *flags, *sources, dest]))
    return "copy", "\n".join(lines) + "\n"


@st.composite
def stages_case(draw: st.DrawFn) -> tuple[str, str]:
    lines = []
    if draw(st.booleans()):
        lines.append("ARG G=global")
    count = draw(st.integers(2, 3))
    for i in range(count):
        parent = "@BASE@" if i == 0 else draw(st.sampled_from(["@BASE@", f"s{i - 1}", "scratch"]))
        lines.append(f"FROM {parent} AS s{i}")
        for line in draw(st.lists(SIMPLE, max_size=2)):
            if not line.startswith(("USER", "SHELL", "ONBUILD RUN")):
                lines.append(line)
        if draw(st.booleans()):
            lines.append("ARG G")
        if parent != "scratch":
            lines.append(f'RUN echo "s{i} $G ${{A:-}}" > /s{i}.txt')
        if i and draw(st.booleans()):
            lines.append(f"COPY --from=s{i - 1} /s{i - 1}.txt /from/")
    return "stages", "\n".join(lines) + "\n"


@st.composite
def heredoc_case(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(["EOF", "E_1", "'EOF'", '"EOF"', "-EOF", "-'EOF'"]))
    bare = name.lstrip("-").strip("'\"")
    body = draw(
        st.lists(st.sampled_from(["echo $V", "echo '$V'", "\techo tab", "x=1"]), max_size=3)
    )
    chomp = name.startswith("-")
    text = "\n".join(("\t" + b) if chomp else b for b in body)
    end = ("\t" if chomp else "") + bare
    form = draw(st.sampled_from(["run", "cat", "copy"]))
    head = {"run": f"RUN <<{name}", "cat": f"RUN cat <<{name} > /out", "copy": f"COPY <<{name} /f"}
    lines = ["FROM @BASE@", "ARG V=val", head[form]]
    if text:
        lines.append(text)
    lines.append(end)
    return "heredoc", "\n".join(lines) + "\n"


FAMILIES = st.one_of(
    instructions_case(),
    expansion_case(),
    expansion_case(),
    parser_case(),
    instructions_case(),
    copy_case(),
    stages_case(),
    heredoc_case(),
)


def generated(seed_value: int, count: int) -> list[Case]:
    """``count`` distinct cases drawn with ``seed_value``."""
    found: dict[str, str] = {}

    @seed(seed_value)
    @settings(
        max_examples=count * 4,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(FAMILIES)
    def collect(drawn: tuple[str, str]) -> None:
        category, text = drawn
        if len(found) < count:
            found.setdefault(text, category)

    collect()
    return [
        Case(name=f"gen-{i:03d}", category=category, dockerfile=text)
        for i, (text, category) in enumerate(found.items())
    ]
