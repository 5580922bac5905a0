"""The Dockerfile parser and shell-word expansion, on their own."""

from __future__ import annotations

import anyio
import pytest

from llbkit.plugins.frontend_dockerfile.convert import BuildOptions, convert
from llbkit.plugins.frontend_dockerfile.parser import DockerfileError, parse
from llbkit.plugins.frontend_dockerfile.parser import parse_words as split_words
from llbkit.plugins.frontend_dockerfile.shell import ExpansionError, expand
from llbkit.sdk import llb


def test_directives_continuations_comments_and_forms() -> None:
    parsed = parse(
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM busybox\n"
        'RUN echo a `\n  # inside\n\n  b\ncmd ["x", "y"]\n'
    )
    assert parsed.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    run, cmd = parsed.instructions[1:]
    assert (run.keyword, run.rest, run.line, run.end_line) == ("RUN", "echo a   b", 4, 7)
    assert (cmd.keyword, cmd.json) == ("CMD", ["x", "y"])


def test_flags_and_heredocs() -> None:
    parsed = parse(
        "FROM x\nCOPY --chown=1:2 --link a b\nRUN <<A cat && <<-'B' cat\none\nA\n\ttwo\n\tB\n"
    )
    copy, run = parsed.instructions[1:]
    assert copy.flags == ["--chown=1:2", "--link"] and copy.rest == "a b"
    assert [(h.name, h.content, h.expand, h.chomp) for h in run.heredocs] == [
        ("A", "one\n", True, False),
        ("B", "\ttwo\n", False, True),  # tabs go where the heredoc is used, as in BuildKit
    ]


async def _image(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
    return "sha256:" + "0" * 64, b'{"config": {}}'


def _refused(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as err:
        anyio.run(convert, parse(text), BuildOptions(), _image)
    return err.value


def test_unknown_instruction_names_the_line_and_a_suggestion() -> None:
    err = _refused("FROM x\nRUN true\nCOPPY a b\n")
    assert str(err) == (
        "dockerfile parse error on line 3: unknown instruction: COPPY (did you mean COPY?)"
    )
    assert err.source.startswith("Dockerfile:3\n")
    assert "   3 | >>> COPPY a b" in err.source
    assert str(_refused("FROM scratch\ncoppy a b\n")).endswith(
        "unknown instruction: coppy (did you mean copy?)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Instructions are refused in order, as BuildKit reads them once the file is split:
        # an earlier one's missing arguments come before a later unknown instruction.
        ("FROM\nFOO bar\n", "line 1: FROM requires either one or three arguments"),
        ("FROM scratch\nEXPOSE\nFOO bar\n", "line 2: EXPOSE requires at least one argument"),
        (
            "FROM scratch\nCOPY\nFOO bar\n",
            "line 2: COPY requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
        ),
        ("FROM scratch\nFROM \n\\", "line 2: FROM requires either one or three arguments"),
        # A line that is only a continuation is an instruction with no name.
        ("FROM scratch\n\\", "line 2: unknown instruction: "),
        ("FROM scratch\n \\\n", "line 2: unknown instruction: "),
    ],
)
def test_instructions_are_refused_in_their_order(text: str, message: str) -> None:
    assert str(_refused(text)) == f"dockerfile parse error on {message}"


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError, match="Dockerfile:2: unterminated heredoc"):
        parse("FROM x\nRUN <<EOF\nno end\n")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "a"),
        ("${A}b", "ab"),
        ("${U:-d}", "d"),
        ("${E:-d}", "d"),
        ("${A:+y}", "y"),
        ('"$A b"', "a b"),
        ("'$A'", "$A"),
        ("\\$A", "$A"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("${A:-${U:-nested}}", "a"),
        ("${U:-${A}}", "a"),
    ],
)
def test_expansion(word: str, expected: str) -> None:
    assert expand(word, {"A": "a", "E": ""}) == expected


def test_required_variable_message() -> None:
    with pytest.raises(ExpansionError, match="U: must be set"):
        expand("${U:?must be set}", {})


def test_split_keeps_quotes_for_expansion() -> None:
    assert split_words('a "b c" d\\ e') == ["a", '"b c"', "d\\ e"]


@pytest.mark.parametrize(
    ("first", "last", "shown"),
    [
        (4, 4, [2, 3, 4, 5, 6]),  # as buildctl showed a failing RUN on line 4 of 7
        (1, 1, [1, 2, 3]),  # no line before: fewer in all
        (7, 7, [5, 6, 7, 8]),  # the empty "line" after the final newline counts
        (3, 4, [2, 3, 4, 5]),
    ],
)
def test_snippet_context_is_buildkits(first: int, last: int, shown: list[int]) -> None:
    from llbkit.core.errors import source_block

    text = "".join(f"L{n}\n" for n in range(1, 8))
    lines = source_block(text, "Dockerfile", first, last).splitlines()
    assert lines[0] == f"Dockerfile:{first}"
    assert [int(line.split("|")[0]) for line in lines[2:-1]] == shown


@pytest.mark.parametrize(
    ("dockerfile", "said"),
    [
        # BuildKit v0.11's hints: the stage names and common images within two edits, the
        # name as written; none for an exact match or a name far from all of them.
        ("FROM alpin\n", "alpin: manifest unknown (did you mean alpine?)"),
        ("FROM busybox:lates\n", "busybox:lates: manifest unknown (did you mean busybox:latest?)"),
        ("FROM x AS tools\nFROM tool\n", "tool: manifest unknown (did you mean tools?)"),
        ("FROM debian\n", "debian: manifest unknown"),
        ("FROM registry.test/team/app\n", "registry.test/team/app: manifest unknown"),
    ],
)
def test_a_base_that_cannot_be_resolved_gets_buildkits_hint(dockerfile: str, said: str) -> None:
    async def unknown(ref: str, platform: llb.Platform, step: str) -> tuple[str, bytes]:
        if ref == "x":
            return await _image(ref, platform)
        raise RuntimeError("manifest unknown")

    with pytest.raises(DockerfileError) as err:
        anyio.run(convert, parse(dockerfile), BuildOptions(), unknown)
    assert str(err.value) == said
    assert err.value.source.startswith("Dockerfile:")


def test_suggestions_are_buildkits() -> None:
    from llbkit.plugins.frontend_dockerfile.suggest import distance, hint, nearest

    assert distance("kitten", "sitting") == 3
    assert nearest("RUNN", ["ADD", "RUN"], case_sensitive=False) == "RUN"
    assert nearest("runn", ["ADD", "RUN"], case_sensitive=False) == "run"
    assert nearest("Runn", ["ADD", "RUN"], case_sensitive=False) == "run"
    assert nearest("RUN", ["ADD", "RUN", "RUNS"]) == ""  # it is one of them
    assert hint("tpye", ["type", "typo"]) == " (did you mean type?)"  # the first of the closest
    assert hint("far", ["type"]) == ""
