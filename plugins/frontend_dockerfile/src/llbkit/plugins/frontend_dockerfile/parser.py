"""Reading a Dockerfile into instructions: directives, continuations, comments, flags, JSON and
shell forms, heredocs. Errors name ``Dockerfile:LINE`` and quote the line."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from llbkit.core.errors import SourceError

__all__ = ["INSTRUCTIONS", "DockerfileError", "Heredoc", "Instruction", "parse"]

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
_HEREDOC = re.compile(r"(\d?)<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\3")


class DockerfileError(SourceError):
    """A Dockerfile that cannot be read or built; names the file and line.

    ``source`` holds the lines around the problem, as BuildKit prints them above its error.
    """


def snippet(text: str, filename: str, first: int, last: int) -> str:
    """Lines ``first``..``last`` of the Dockerfile marked ``>>>``, with a line of context."""
    lines = text.split("\n")
    start, end = max(first - 2, 1), min(last + 1, len(lines))
    shown = []
    for n in range(start, end + 1):
        mark = ">>>" if first <= n <= last else "   "
        shown.append(f" {n:>3} | {mark} {lines[n - 1]}")
    rule = "-" * 20
    return "\n".join([f"{filename}:{first}", rule, *shown, rule])


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int | None = None


@dataclass
class Instruction:
    """One instruction: its keyword, flags, arguments (a JSON list or the raw text)."""

    keyword: str
    original: str
    line: int
    end_line: int
    flags: list[str] = field(default_factory=list)
    rest: str = ""
    json: list[str] | None = None
    heredocs: list[Heredoc] = field(default_factory=list)

    def where(self, filename: str = "Dockerfile") -> str:
        return f"{filename}:{self.line}"


@dataclass
class Parsed:
    instructions: list[Instruction]
    directives: dict[str, str]
    escape: str
    text: str = ""


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    found: dict[str, str] = {}
    for n, line in enumerate(lines):
        match = _DIRECTIVE.match(line.strip())
        if not line.strip().startswith("#") or match is None:
            return found, n
        key = match.group(1).lower()
        if key in ("syntax", "escape", "check"):
            if key in found:
                return found, n
            found[key] = match.group(2)
        else:
            return found, n
    return found, len(lines)


def _split_flags(text: str) -> tuple[list[str], str]:
    flags = []
    rest = text.lstrip()
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        flags.append(word)
        rest = after.lstrip()
    return flags, rest


def parse(text: str, filename: str = "Dockerfile") -> Parsed:
    """Parse ``text``; raise :class:`DockerfileError` naming the line of the first problem."""
    lines = text.replace("\r\n", "\n").split("\n")
    directives, start = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"{filename}:1: invalid escape token {escape!r}; use \\ or `")
    instructions: list[Instruction] = []
    n = start
    while n < len(lines):
        raw = lines[n]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            n += 1
            continue
        first = n
        logical = raw
        # A trailing escape continues the instruction; comments and blank lines inside vanish.
        while logical.rstrip().endswith(escape) and n + 1 < len(lines):
            logical = logical.rstrip()[: -len(escape)]
            n += 1
            while (not lines[n].strip() or lines[n].strip().startswith("#")) and n + 1 < len(lines):
                n += 1
            nxt = lines[n]
            if nxt.strip().startswith("#"):
                break
            logical += nxt
        if logical.rstrip().endswith(escape):
            logical = logical.rstrip()[: -len(escape)]
        keyword, _, rest = logical.strip().partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = more + " " + rest
        upper = keyword.upper()
        if upper not in INSTRUCTIONS:
            close = difflib.get_close_matches(upper, INSTRUCTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DockerfileError(
                f"dockerfile parse error on line {first + 1}: unknown instruction: {keyword}{hint}",
                snippet(text, filename, first + 1, n + 1),
            )
        inst = Instruction(upper, logical.strip(), first + 1, n + 1)
        inst.flags, inst.rest = _split_flags(rest)
        if inst.rest.startswith("["):
            try:
                decoded = json.loads(inst.rest)
            except ValueError:
                decoded = None
            if isinstance(decoded, list) and all(isinstance(x, str) for x in decoded):
                inst.json = decoded
        if upper in _HEREDOC_INSTRUCTIONS and inst.json is None:
            n = _heredocs(inst, lines, n, filename)
        instructions.append(inst)
        n += 1
    return Parsed(instructions, directives, escape, text.replace("\r\n", "\n"))


def _heredocs(inst: Instruction, lines: list[str], n: int, filename: str) -> int:
    for match in _HEREDOC.finditer(inst.rest):
        fd, chomp, quote, name = match.groups()
        body = []
        while True:
            n += 1
            if n >= len(lines):
                raise DockerfileError(  # one line; the instruction is shown above it
                    f"{filename}:{inst.line}: unterminated heredoc {name!r}",
                    f"  {inst.line} | {inst.original}",
                )
            line = lines[n]
            check = line.lstrip("\t") if chomp else line
            if check == name:
                break
            body.append(line.lstrip("\t") if chomp else line)
        content = "\n".join(body) + ("\n" if body else "")
        inst.heredocs.append(
            Heredoc(name, content, expand=not quote, chomp=bool(chomp), fd=int(fd) if fd else None)
        )
    inst.end_line = n + 1
    return n
