"""Conformance tables: how BuildKit v0.11.6's Dockerfile parser, shell lexer and image config
behave (each row checked against BuildKit by the differential harness, tests/differential/),
as llbkit's own tests."""

from __future__ import annotations

import pytest

from llbkit.plugins.frontend_dockerfile.config import (
    exposed_ports,
    go_duration,
    image_config,
    parse_duration,
    parse_signal,
)
from llbkit.plugins.frontend_dockerfile.parser import (
    DockerfileError,
    detect_syntax,
    parse,
    parse_heredoc,
)
from llbkit.plugins.frontend_dockerfile.shell import ExpansionError, expand, expand_words

ENV = {"A": "x", "E": "", "P": "81 82", "é": "accent"}

# -- the shell lexer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("abc\\", "abc"),  # an escape ending the word is dropped
        ("a\\ b", "a b"),
        ("$1x", "x"),  # positional: only the digits name it
        ("${1}", ""),
        ("$12", ""),
        ("$@$*$#$?$$$!$-$0", ""),  # special parameters are names, unset
        ('"$@"', ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$é", "accent"),  # names are letters, not only ASCII
        ("${A}y", "xy"),
        ("${A:-d}", "x"),
        ("${E:-d}", "d"),
        ("${U:-d}", "d"),
        ("${A:+s}", "s"),
        ("${E:+s}", ""),
        ("${U:-${A}z}", "xz"),
        ("${E?unused}", ""),  # ? without a colon: only unset fails
        ("'$A'", "$A"),
        ('"$A"', "x"),
        ("\\$A", "$A"),
        ('"a\\"b"', 'a"b'),
        ('"c\\\\d"', "c\\d"),
        ('"e\\f"', "e\\f"),  # other escapes stay in double quotes
        ("'a\\b'", "a\\b"),
        ("a\"b c\"'d e'f", "ab cd ef"),
        ('${U:-"q w"}', "q w"),
    ],
)
def test_lexer(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${A-d}", "failed to process \"${A-d}\": missing ':' in substitution"),
        ("${A+d}", "missing ':' in substitution"),
        ("${B", "missing ':' in substitution"),
        ("${", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:x}", "syntax error: bad substitution"),
        ("${A:-x", "syntax error: missing '}'"),
        ("${A:*x}", "unsupported modifier (*) in substitution"),
        ("${U:?is missing}", "U: is missing"),
        ("${U:?}", "U: is not allowed to be unset"),
        ("${E:?}", "E: is not allowed to be empty"),
        ("${U?}", "U: is not allowed to be unset"),
        ('"abc', "unexpected end of statement while looking for matching double-quote"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        ('"abc\\', "looking for matching double-quote"),
    ],
)
def test_lexer_errors(word: str, message: str) -> None:
    with pytest.raises(ExpansionError) as err:
        expand(word, ENV)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("word", "words"),
    [
        ("$P", ["81", "82"]),  # an unquoted expansion is split
        ('"$P"', ["81 82"]),
        ("a$P", ["a81", "82"]),
        ("'a b' c", ["a b", "c"]),
        ("", []),
    ],
)
def test_lexer_words(word: str, words: list[str]) -> None:
    assert expand_words(word, ENV) == words


def test_backtick_escape() -> None:
    assert expand("c:\\dir`$A", ENV, "`") == "c:\\dir$A"


# -- the parser --------------------------------------------------------------------------------


def _last(text: str) -> object:
    return parse("FROM scratch\n" + text).instructions[-1]


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        # ENV/LABEL: the old form splits at the first whitespace, tabs too
        ("ENV A\tb\tc\n", "pairs", [("A", "b\tc")]),
        ("LABEL key value with  spaces\n", "pairs", [("key", "value with  spaces")]),
        ("ENV A=1 B='x y'\n", "pairs", [("A", "1"), ("B", "'x y'")]),
        # flags: -- ends them; quotes and backslashes are read inside them
        ("COPY -- --a.txt /x\n", "flags", []),
        ("COPY -- --a.txt /x\n", "args", ["--a.txt", "/x"]),
        ('COPY --chown="1:2" a /\n', "flags", ["--chown=1:2"]),
        # ADD/COPY/VOLUME/EXPOSE/FROM split at whitespace, quotes do not group
        ('COPY "sp ace.txt" /\n', "args", ['"sp', 'ace.txt"', "/"]),
        ("VOLUME /a  /b\n", "args", ["/a", "/b"]),
        ('VOLUME ["/c", "/d e"]\n', "args", ["/c", "/d e"]),
        # JSON: the first value is read (what follows is ignored), single quotes are not JSON
        ('CMD ["echo", "hi"] x\n', "json", ["echo", "hi"]),
        ("CMD ['echo']\n", "json", None),
        ("CMD ['echo']\n", "rest", "['echo']"),
        ('CMD {"a": "b"}\n', "json", None),
        ("CMD []\n", "json", []),
        # ARG keeps shell words, quotes included, for the expander
        ("ARG A='x y' B\n", "args", ["A='x y'", "B"]),
        # continuation: whitespace after the escape, comment and blank lines inside
        ("ENV A=1 \\  \n B=2\n", "pairs", [("A", "1"), ("B", "2")]),
        ("ENV A=1 \\\n# comment\n B=2\n", "pairs", [("A", "1"), ("B", "2")]),
        ("ENV A=1 \\\n\n B=2\n", "pairs", [("A", "1"), ("B", "2")]),
        # an escaped escape ending a line is no continuation
        ("ENV A=x\\\\\nENV B=y\n", "pairs", [("B", "y")]),
        ("HEALTHCHECK --retries=2 CMD true\n", "args", ["CMD", "true"]),
        ('HEALTHCHECK CMD ["a", "b"]\n', "args", ["CMD", "a", "b"]),
    ],
)
def test_parser(text: str, field: str, expected: object) -> None:
    assert getattr(_last(text), field) == expected


@pytest.mark.parametrize(
    ("text", "heredocs"),
    [
        ("RUN <<EOF\nx\nEOF\n", [("EOF", "x\n", True, False, None)]),
        ("RUN <<-EOF\n\tx\n\tEOF\n", [("EOF", "\tx\n", True, True, None)]),
        ("RUN <<'EOF'\nx\nEOF\n", [("EOF", "x\n", False, False, None)]),
        ('RUN cat <<E"O"F > /f\nx\nEOF\n', [("EOF", "x\n", False, False, None)]),
        ("RUN cat <<E.F\nx\nE.F\n", [("E.F", "x\n", True, False, None)]),
        ("RUN cat 3<<EOF\nx\nEOF\n", [("EOF", "x\n", True, False, 3)]),
        (
            "RUN cat <<A && cat <<B\na\nA\nb\nB\n",
            [("A", "a\n", True, False, None), ("B", "b\n", True, False, None)],
        ),
        ("RUN cat <<<word\n", []),  # a here-string, not a heredoc
        ('RUN echo "<<EOF"\n', []),  # inside quotes
        ("RUN cat << EOF\n", []),  # no name after <<
        ('RUN ["sh", "-c", "cat <<EOF"]\n', []),  # JSON form has none
    ],
)
def test_heredocs(text: str, heredocs: list[tuple[object, ...]]) -> None:
    found = _last(text).heredocs  # type: ignore[attr-defined]
    assert [(h.name, h.content, h.expand, h.chomp, h.fd) for h in found] == heredocs


def test_heredoc_marker() -> None:
    doc = parse_heredoc('<<-"EOF"')
    assert doc is not None and (doc.name, doc.expand, doc.chomp) == ("EOF", False, True)
    assert parse_heredoc("<<") is None and parse_heredoc("<<a b") is None


@pytest.mark.parametrize(
    ("text", "escape"),
    [
        ("# escape=`\nFROM scratch\n", "`"),
        ("#   escape   =   `\nFROM scratch\n", "`"),
        ("# ESCAPE=`\nFROM scratch\n", "`"),
        ("# syntax=x\n# escape=`\nFROM scratch\n", "`"),
        ("#!/bin/x\n# escape=`\nFROM scratch\n", "\\"),  # a shebang ends the directives
        ("# foo=bar\n# escape=`\nFROM scratch\n", "\\"),  # so does an unknown one
        ("FROM scratch\n# escape=`\n", "\\"),
        ("\ufeff# escape=`\r\nFROM scratch\r\n", "`"),
    ],
)
def test_directives(text: str, escape: str) -> None:
    assert parse(text).escape == escape


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# escape=`\n# escape=\\\nFROM scratch\n", "only one escape parser directive"),
        ("# escape=x\nFROM scratch\n", "invalid escape token 'x' does not match ` or \\"),
        ("# comment\n", "file with no instructions"),
        ('FROM scratch\nCMD ["echo", ["x"]]\n', "arrays must be comprised of strings only"),
        ('FROM scratch\nCMD ["echo", 1]\n', "arrays must be comprised of strings only"),
        ("FROM scratch\nENV A\n", "ENV must have two arguments"),
        ("FROM scratch\nENV A=1 b}\n", 'can\'t find = in "b}"'),
        ("FROM scratch\nRUN <<EOF\nx\n", "unterminated heredoc"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as err:
        parse(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "syntax"),
    [
        ("# syntax=docker/dockerfile:1\nFROM scratch\n", "docker/dockerfile:1"),
        ("#!/usr/bin/env buildctl\n# syntax=a/b:1 --x\nFROM scratch\n", "a/b:1"),
        ("// syntax=a/b\nFROM scratch\n", "a/b"),
        ('{"syntax": "a/b", "other": 1}', "a/b"),
        ("# escape=`\n# syntax=a/b\nFROM scratch\n", "a/b"),
        ("FROM scratch\n# syntax=a/b\n", ""),
        ("# foo=bar\n# syntax=a/b\n", ""),
    ],
)
def test_syntax_detection(text: str, syntax: str) -> None:
    assert detect_syntax(text) == syntax


# -- the image config and its values -----------------------------------------------------------


def test_image_config_keys_and_order() -> None:
    config = image_config(
        {"Shell": ["a"], "Env": ["PATH=/bin"], "User": "", "WorkingDir": "/", "Other": 1}
    )
    assert list(config) == ["Env", "WorkingDir", "OnBuild", "Shell"]
    assert config["OnBuild"] is None
    check = image_config({"Healthcheck": {"Retries": 0, "Test": ["NONE"], "Interval": 0}})
    assert check["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize(
    ("specs", "ports"),
    [
        (["80"], ["80/tcp"]),
        (["80/TCP", "53/UDP"], ["80/tcp", "53/udp"]),
        (["8000-8002"], ["8000/tcp", "8001/tcp", "8002/tcp"]),
        (["9000-9001/udp"], ["9000/udp", "9001/udp"]),
        (["127.0.0.1:8080:80"], ["80/tcp"]),
    ],
)
def test_exposed_ports(specs: list[str], ports: list[str]) -> None:
    assert exposed_ports(specs) == ports


@pytest.mark.parametrize(
    ("spec", "message"),
    [("abc", "Invalid containerPort: abc"), ("80/xyz", "Invalid proto: xyz")],
)
def test_exposed_port_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exposed_ports([spec])


@pytest.mark.parametrize(
    ("text", "number"),
    [("9", 9), ("SIGKILL", 9), ("term", 15), ("SIGRTMIN+3", 37), ("RTMAX-1", 63)],
)
def test_signals(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "256", "SIG"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid signal: {text}"):
        parse_signal(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1_000_000, "1ms"),
        (1_500_000, "1.5ms"),
        (5_000_000_000, "5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
    ],
)
def test_go_durations(ns: int, text: str) -> None:
    assert go_duration(ns) == text
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", 'time: missing unit in duration "5"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("", 'time: invalid duration ""'),
    ],
)
def test_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)
