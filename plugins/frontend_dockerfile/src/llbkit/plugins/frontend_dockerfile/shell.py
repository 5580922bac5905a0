"""Shell-word expansion as BuildKit v0.11's Dockerfile lexer does it: quotes, escapes, ``$VAR``,
``${VAR}``, the ``:-``, ``:+``, ``:?`` and ``?`` modifiers, and the special parameters.

What v0.11 does differently from a POSIX shell is kept, because images must match: ``${A-x}``
and ``${A+x}`` (no colon) are errors, ``$1x`` names ``1``, ``$@``/``$#``/… are looked up as
names (and so are empty), and an escape character ending a word is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from llbkit.core.errors import UserError

__all__ = [
    "MAX_DEPTH",
    "MAX_WORD",
    "ExpansionError",
    "ExpansionLimitError",
    "expand",
    "expand_heredoc",
    "expand_words",
]

# A small Dockerfile must not take the machine: ARGs that double each other reach terabytes in
# forty lines, and ``${a:-${a:-…}}`` thousands deep exhausts the stack. No word a real build
# uses comes near either (Linux refuses a single argument or variable over 128 KiB anyway).
MAX_WORD = 1 << 20
MAX_DEPTH = 64

#: the parameters a ``$`` names with one character, as the lexer reads them
SPECIAL = frozenset("@*#?-$!0")


class ExpansionError(UserError):
    """A ``${VAR?msg}`` on an unset variable, or a malformed expansion; on one line, whatever
    line breaks the word (a heredoc's) holds."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\n", "\\n"))


class ExpansionLimitError(ExpansionError):
    """A word that would expand past :data:`MAX_WORD` or nest past :data:`MAX_DEPTH`."""


def _check_depth(text: str) -> None:
    depth = deepest = 0
    for i, c in enumerate(text):
        if c == "{" and i and text[i - 1] == "$":
            depth += 1
            deepest = max(deepest, depth)
        elif c == "}" and depth:
            depth -= 1
    if deepest > MAX_DEPTH:
        raise ExpansionLimitError(
            f"variable substitutions nested {deepest} deep (at most {MAX_DEPTH})"
        )


def _grown(size: int, value: str) -> int:
    size += len(value)
    if size > MAX_WORD:
        raise ExpansionLimitError(f"a word expands to more than {MAX_WORD >> 20} MiB")
    return size


def go_quote(text: str) -> str:
    """Go's ``%q`` of ``text`` (close enough for the messages that quote a word)."""
    return json.dumps(text, ensure_ascii=False)


_SPACE = re.compile(r"\s+")


class _Words:
    """The words an expansion yields: unquoted expansions split at whitespace.

    Built from parts, and a value split at its whitespace runs at once: a megabyte variable
    must not cost a megabyte of one-character steps (or a quadratic string)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.parts: list[str] = []
        self.in_word = False

    def _end(self) -> None:
        if self.in_word and any(self.parts):
            self.words.append("".join(self.parts))
            self.parts = []
            self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            self._end()
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.parts.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for n, piece in enumerate(_SPACE.split(text)):
            if n:  # a run of whitespace came before this piece
                self._end()
            if piece:
                self.add_raw(piece)

    def done(self) -> list[str]:
        if any(self.parts):
            self.words.append("".join(self.parts))
            self.parts = []
        return self.words


class _Lexer:
    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
        skip_quotes: bool = False,
    ) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_quotes = skip_quotes

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def until(self, stop: str = "") -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or the end; the text and its words."""
        out: list[str] = []
        words = _Words()
        size = len(self.text)  # what the word holds besides its expansions, counted once up front
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(out), words.done()
            if ch == "$":
                value = self.dollar()
                size = _grown(size, value)
                out.append(value)
                words.add_string(value)
            elif ch in "'\"" and not self.skip_quotes:
                value = self.single() if ch == "'" else self.double()
                size = _grown(size, value)
                out.append(value)
                words.add_raw(value)
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        out.append(ch)
                    ch = self.next()
                    if not ch:  # an escape ending the word is dropped
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.done()

    def single(self) -> str:
        quote = self.next()
        out = [quote] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double(self) -> str:
        quote = self.next()
        out = [quote] if self.raw_quotes else []
        size = 0
        while True:
            ch = self.peek()
            if not ch:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                value = self.dollar()
                size = _grown(size, value)
                out.append(value)
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                after = self.peek()
                if not after:
                    continue
                if after in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        first = self.peek()
        if first.isdigit():
            digits = []
            while self.peek().isdigit():
                digits.append(self.next())
            return "".join(digits)
        if first and first in SPECIAL:
            return self.next()
        found = []
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            found.append(self.next())
        return "".join(found)

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            return "$" + name if not found and self.skip_unset else value
        self.next()
        if not self.peek():
            raise ExpansionError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.lookup(name)
            return f"${{{name}}}" if not found and self.skip_unset else value
        if ch == "?":
            word = self.modifier_word()
            value, found = self.lookup(name)
            if found:
                return value
            if self.skip_unset:
                return f"${{{name}?{word}}}"
            raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
        if ch == ":":
            return self.colon(name)
        raise ExpansionError("missing ':' in substitution")

    def modifier_word(self) -> str:
        try:
            word, _ = self.until("}")
        except ExpansionError:
            if not self.peek():
                raise ExpansionError("syntax error: missing '}'") from None
            raise
        return word

    def colon(self, name: str) -> str:
        modifier = self.next()
        word = self.modifier_word()
        value, found = self.lookup(name)
        if not found and self.skip_unset and modifier in "+-?":
            return f"${{{name}:{modifier}{word}}}"
        if modifier == "+":
            return word if value else value
        if modifier == "-":
            return value or word
        if modifier == "?":
            if not found:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if not value:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")


def _run(word: str, env: Mapping[str, str], escape: str, **flags: bool) -> tuple[str, list[str]]:
    _check_depth(word)
    try:
        return _Lexer(word, env, escape, **flags).until()
    except ExpansionLimitError:
        raise  # said of the instruction by the caller; the word may be what exploded
    except ExpansionError as err:
        raise ExpansionError(f"failed to process {go_quote(word)}: {err}") from None


def expand(word: str, env: Mapping[str, str], escape: str = "\\", **flags: bool) -> str:
    """Process one word: remove quotes, apply escapes, substitute variables."""
    return _run(word, env, escape, **flags)[0]


def expand_words(word: str, env: Mapping[str, str], escape: str = "\\", **flags: bool) -> list[str]:
    """Process ``word`` into words: unquoted whitespace, and whitespace that unquoted
    expansions bring, separate them."""
    return _run(word, env, escape, **flags)[1]


def expand_heredoc(text: str, env: Mapping[str, str]) -> str:
    """A heredoc's content: variables substituted, quotes left alone (the lexer with quotes
    not processed, as BuildKit expands a heredoc)."""
    return expand(text, env, "\\", skip_quotes=True)
