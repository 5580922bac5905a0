"""Reading a Dockerfile into instructions as BuildKit v0.11's parser does: directives,
continuations, comments, flags, each instruction's arguments split its own way (JSON, shell
words, whitespace), heredocs found by shell-word lexing. Errors name ``Dockerfile:LINE``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llbkit.core.errors import SourceError, source_block
from llbkit.plugins.frontend_dockerfile.suggest import hint

__all__ = [
    "INSTRUCTIONS",
    "DockerfileError",
    "Heredoc",
    "Instruction",
    "chomp",
    "detect_syntax",
    "parse",
    "parse_heredoc",
]

INSTRUCTIONS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
_HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
#: what the parser splits at: not newlines (Go's ``[\t\v\f\r ]+``)
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_DIRECTIVE_KEYS = ("syntax", "escape", "check")
#: how each instruction's arguments are split (BuildKit's dispatch table)
_JSON_OR_LIST = {"ADD", "COPY", "VOLUME"}
_JSON_OR_STRING = {"CMD", "ENTRYPOINT", "RUN", "SHELL"}
_WHITESPACE_LIST = {"EXPOSE", "FROM"}
_STRING = {"MAINTAINER", "STOPSIGNAL", "USER", "WORKDIR"}


class DockerfileError(SourceError):
    """A Dockerfile that cannot be read or built; names the file and line.

    ``source`` holds the lines around the problem, as BuildKit prints them above its error.
    """


class _ArgsError(ValueError):
    """An instruction's arguments that do not parse (worded as BuildKit words it)."""


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int | None = None


@dataclass
class Instruction:
    """One instruction: its keyword, flags and arguments.

    ``rest`` is the text after the flags; ``json`` the arguments when written as a JSON array;
    ``args`` the arguments as BuildKit's parser splits them for this instruction (JSON, shell
    words with their quotes, or whitespace-separated); ``pairs`` the ENV/LABEL key-value
    pairs (unexpanded); ``child`` the instruction an ONBUILD holds.
    """

    keyword: str
    original: str
    line: int
    end_line: int
    flags: list[str] = field(default_factory=list)
    rest: str = ""
    json: list[str] | None = None
    heredocs: list[Heredoc] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] | None = None
    child: Instruction | None = None
    #: an argument error found while parsing, reported when the instruction is read (as
    #: BuildKit reports it with the line)
    error: str = ""

    def where(self, filename: str = "Dockerfile") -> str:
        return f"{filename}:{self.line}"


@dataclass(frozen=True)
class ParseWarning:
    """What the parser warns of, with what BuildKit shows beside it."""

    message: str
    detail: tuple[str, ...] = ()
    url: str = ""


@dataclass
class Parsed:
    instructions: list[Instruction]
    directives: dict[str, str]
    escape: str
    text: str = ""
    warnings: list[ParseWarning] = field(default_factory=list)


class _Directives:
    """The parser directives at the top of the file (``# escape=`` …); the first line that is
    not one ends them."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}
        self.done = False

    def feed(self, line: str, filename: str, number: int) -> None:
        if self.done:
            return
        match = _DIRECTIVE.match(line)
        key = match.group(1).lower() if match else ""
        if key not in _DIRECTIVE_KEYS:
            self.done = True
            return
        if key in self.found:
            raise DockerfileError(
                f"{filename}:{number}: only one {key} parser directive can be used"
            )
        assert match is not None
        value = match.group(2)
        if key == "escape" and value not in ("\\", "`"):
            raise DockerfileError(
                f"{filename}:{number}: invalid escape token '{value}' does not match ` or \\"
            )
        self.found[key] = value


def _continues(line: str, escape: str) -> tuple[str, bool]:
    """``line`` without a continuing escape, and whether it continues. An escape after an
    escape is not a continuation."""
    e = re.escape(escape)
    pattern = re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")
    if pattern.search(line):
        return pattern.sub(r"\1", line, count=1), True
    return line, False


def _is_comment(line: str) -> bool:
    return line.rstrip("\r\n").lstrip().startswith("#")


class _Lines:
    """The file's lines as BuildKit's scanner yields them (each with its newline), read into
    logical lines: directives noted, comments dropped, continuations joined."""

    def __init__(self, text: str, filename: str) -> None:
        raw = text.split("\n")
        self.lines = [line + "\n" for line in raw[:-1]] + ([raw[-1]] if raw[-1] else [])
        if self.lines and self.lines[0].startswith("\ufeff"):
            self.lines[0] = self.lines[0][1:]
        self.filename = filename
        self.directives = _Directives()
        self.escape = "\\"
        self.n = 0
        self.warnings: list[ParseWarning] = []

    def _next(self, strip_left: bool) -> tuple[str, str]:
        """The next line raw, and as the parser reads it (a comment reads as empty)."""
        raw = self.lines[self.n]
        self.n += 1
        token = raw.rstrip("\r\n")
        if strip_left:
            token = token.lstrip()
        self.directives.feed(token, self.filename, self.n)
        self.escape = self.directives.found.get("escape", "\\")
        return raw, "" if token.startswith("#") else token

    def logical(self) -> tuple[str, int] | None:
        """The next instruction's text and first line, or ``None`` at the end."""
        while self.n < len(self.lines):
            _, token = self._next(True)
            start = self.n
            line, more = _continues(token, self.escape)
            if more or line:
                break
        else:
            return None
        empty = False
        while more and self.n < len(self.lines):
            raw, token = self._next(False)
            if _is_comment(raw):
                continue
            if not token.strip():
                empty = True
                continue
            part, more = _continues(token, self.escape)
            line += part
        if empty:
            self.warnings.append(
                ParseWarning(
                    f"Empty continuation line found in: {line}",
                    ("Empty continuation lines will become errors in a future release",),
                    "https://github.com/moby/moby/pull/33719",
                )
            )
        return line, start


def parse(text: str, filename: str = "Dockerfile") -> Parsed:
    """Parse ``text``; raise :class:`DockerfileError` naming the line of the first problem."""
    reader = _Lines(text, filename)
    instructions: list[Instruction] = []
    while (found := reader.logical()) is not None:
        line, start = found
        inst = _instruction(line, reader.escape)
        inst.line, inst.end_line = start, reader.n
        if inst.error:
            raise DockerfileError(
                f"dockerfile parse error on line {start}: {inst.error}",
                source_block(text, filename, start, reader.n),
            )
        holder = inst.child if inst.keyword == "ONBUILD" and inst.child else inst
        if holder.keyword in _HEREDOC_INSTRUCTIONS and holder.json is None:
            for doc in _heredoc_words(line):
                content, reader.n = _heredoc_body(reader.lines, reader.n, doc)
                if content is None:
                    raise DockerfileError(
                        f"{filename}:{start}: unterminated heredoc",
                        source_block(text, filename, start, reader.n),
                    )
                holder.heredocs.append(Heredoc(doc.name, content, doc.expand, doc.chomp, doc.fd))
            inst.end_line = reader.n
        # An unknown instruction is refused in its turn, with the others' arguments
        # (``unknown_instruction``), as BuildKit reads them: after the whole file is split.
        instructions.append(inst)
    if not instructions:
        last = max(reader.n, 1)  # where BuildKit places it: the last line read
        raise DockerfileError(
            f"{filename}:{last}: file with no instructions",
            source_block(text, filename, last, last),
        )
    return Parsed(
        instructions,
        dict(reader.directives.found),
        reader.escape,
        text.replace("\r\n", "\n"),
        reader.warnings,
    )


def unknown_instruction(inst: Instruction) -> str | None:
    """Why ``inst`` is no instruction (BuildKit's words, with a suggestion), or ``None``."""
    if inst.keyword in INSTRUCTIONS:
        return None
    words = inst.original.split()
    written = words[0] if words else ""  # a line that is only a continuation
    said = hint(written, INSTRUCTIONS, case_sensitive=False) if written else ""
    return f"unknown instruction: {written}{said}"


def _heredoc_body(lines: list[str], n: int, doc: Heredoc) -> tuple[str | None, int]:
    """The lines from ``n`` up to ``doc``'s terminator (``None`` without one), and the line
    after it. The content is kept as written: ``<<-`` tabs go where it is used."""
    body: list[str] = []
    while n < len(lines):
        current = lines[n]
        n += 1
        candidate = current.rstrip("\r\n")
        if doc.chomp:
            candidate = candidate.lstrip("\t")
        if candidate == doc.name:
            return "".join(body), n
        body.append(current)
    return None, n


def _instruction(line: str, escape: str) -> Instruction:
    """One logical line: keyword, flags (``--`` ends them) and arguments split as BuildKit
    splits that instruction's."""
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    keyword = parts[0]
    flags, rest = _flags(parts[1]) if len(parts) == 2 else ([], "")
    rest = rest.strip()
    inst = Instruction(keyword.upper(), line, 0, 0, flags, rest)
    upper = inst.keyword
    try:
        if upper in _JSON_OR_LIST:
            inst.json = _json(rest)
            inst.args = inst.json if inst.json is not None else _whitespace_split(rest)
        elif upper in _JSON_OR_STRING:
            inst.json = _json(rest) if rest else None
            inst.args = inst.json if inst.json is not None else ([rest] if rest else [])
        elif upper in _WHITESPACE_LIST:
            inst.args = _whitespace_split(rest)
        elif upper in _STRING:
            inst.args = [rest] if rest else []
        elif upper == "ARG":
            inst.args = parse_words(rest, escape)
        elif upper in ("ENV", "LABEL"):
            inst.pairs = _name_values(rest, upper, escape)
        elif upper == "HEALTHCHECK":
            first = re.match(r"\S*", rest)
            kind = first.group(0) if first else ""
            command = rest[len(kind) :].lstrip()
            inst.json = _json(command) if command else None
            if kind:
                inst.args = [kind, *(inst.json if inst.json is not None else [command])]
                if not command:
                    inst.args = [kind]
        elif upper == "ONBUILD" and rest:
            inst.child = _instruction(rest, escape)
            if inst.child.error:
                inst.error = inst.child.error
    except _ArgsError as err:
        inst.error = str(err)
    return inst


def _flags(text: str) -> tuple[list[str], str]:
    """Leading ``--name=value`` words (quotes removed, ``\\`` escapes applied); ``--`` alone
    ends them. The rest of the text after them."""
    flags: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if not text.startswith("--", i):
            return flags, text[i:]
        word, quote, blank_ok = "", "", False
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == quote:
                    quote = ""
                    i += 1
                    continue
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote, blank_ok = ch, True
                i += 1
                continue
            if ch == "\\":
                if i + 1 == len(text):
                    i += 1
                    quote = ""
                    continue
                i += 1
                ch = text[i]
            word += ch
            i += 1
        if word == "--":
            return flags, text[i:]
        if word or blank_ok:
            flags.append(word)
        if i >= len(text):
            return flags, ""


def _json(text: str) -> list[str] | None:
    """A JSON array of strings, as Go's decoder reads the first value (what follows it is
    ignored); ``None`` when the text is not one. Other values in the array are an error."""
    text = text.lstrip()
    if not text.startswith("["):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise _ArgsError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _whitespace_split(text: str) -> list[str]:
    return _WHITESPACE.split(text) if text else []


def parse_words(text: str, escape: str = "\\") -> list[str]:
    """Words split at whitespace outside quotes, quotes and escapes kept for the expander; an
    escape ending the text is dropped (BuildKit's ``parseWords``)."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == len(text):
                    break
                word += ch
                i += 1
                ch = text[i]
            word += ch
            i += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append(word)
            word, blank_ok, in_word = "", False, False
            i += 1
            continue
        if ch in "'\"":
            quote, blank_ok = ch, True
        elif ch == escape:
            if i + 1 == len(text):
                break
            word += ch
            i += 1
            ch = text[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _name_values(text: str, keyword: str, escape: str) -> list[tuple[str, str]]:
    """ENV and LABEL: ``k=v …``, or the old ``k v`` (split at the first whitespace)."""
    words = parse_words(text, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(text, maxsplit=1)
        if len(parts) < 2:
            raise _ArgsError(f"{keyword} must have two arguments")
        return [(parts[0], parts[1])]
    found = []
    for word in words:
        if "=" not in word:
            raise _ArgsError(
                f"Syntax error - can't find = in {json.dumps(word)}. Must be of the form: "
                "name=value"
            )
        key, _, value = word.partition("=")
        found.append((key, value))
    return found


def _heredoc_words(line: str) -> list[Heredoc]:
    """The heredocs a line opens: its shell words (quotes and escapes kept) that read as
    ``[n]<<[-]NAME`` with NAME one word."""
    from llbkit.plugins.frontend_dockerfile.shell import ExpansionError, expand_words

    try:
        words = expand_words(line, {}, "\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
    except ExpansionError:
        return []
    return [doc for doc in map(parse_heredoc, words) if doc is not None]


def parse_heredoc(word: str) -> Heredoc | None:
    """``word`` as a heredoc marker (``[n]<<[-]NAME``), or ``None``; quoting any of NAME turns
    expansion off."""
    from llbkit.plugins.frontend_dockerfile.shell import ExpansionError, expand_words

    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    fd, dash, rest = match.groups()
    try:
        plain = expand_words(rest, {}, "\\", skip_unset=True)
        raw = expand_words(rest, {}, "\\", raw_quotes=True, skip_unset=True)
    except ExpansionError as err:
        raise DockerfileError(str(err)) from None
    if len(plain) != 1 or len(raw) != 1:
        return None
    quotes = plain[0].count("'") + plain[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(
        plain[0], "", expand=quotes == raw_quotes, chomp=dash == "-", fd=int(fd) if fd else None
    )


def chomp(content: str) -> str:
    """A ``<<-`` heredoc's content: leading tabs removed from every line."""
    return re.sub(r"(?m)^\t+", "", content)


def detect_syntax(text: str) -> str:
    """The frontend image a Dockerfile names, as BuildKit finds it: a ``# syntax=`` or
    ``// syntax=`` directive (after a ``#!`` line, if any), or a JSON ``{"syntax": …}``."""
    first, _, rest = text.partition("\n")
    body = rest if first.startswith("#!") else text
    for comment in ("#", "//"):
        pattern = re.compile(rf"^{comment}\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
        for line in body.split("\n"):
            match = pattern.match(line.rstrip("\r"))
            if match is None or match.group(1).lower() not in _DIRECTIVE_KEYS:
                break
            if match.group(1).lower() == "syntax":
                return match.group(2).split(" ", 1)[0]
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    syntax = found.get("syntax") if isinstance(found, dict) else None
    return syntax if isinstance(syntax, str) else ""
