"""Shell-word expansion as BuildKit's Dockerfile lexer does it: quotes, escapes, ``$VAR``,
``${VAR}`` and the ``:-``, ``-``, ``:+``, ``+``, ``:?``, ``?`` modifiers."""

from __future__ import annotations

from collections.abc import Mapping

from llbkit.core.errors import UserError

__all__ = [
    "MAX_DEPTH",
    "MAX_WORD",
    "ExpansionError",
    "ExpansionLimitError",
    "expand",
    "expand_heredoc",
    "split_words",
]

# A small Dockerfile must not take the machine: ARGs that double each other reach terabytes in
# forty lines, and ``${a:-${a:-…}}`` thousands deep exhausts the stack. No word a real build
# uses comes near either (Linux refuses a single argument or variable over 128 KiB anyway).
MAX_WORD = 1 << 20
MAX_DEPTH = 64


class ExpansionError(UserError):
    """A ``${VAR?msg}`` on an unset variable, or a malformed expansion; on one line, whatever
    line breaks the word (a heredoc's) holds."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\n", "\\n"))


class ExpansionLimitError(ExpansionError):
    """A word that would expand past :data:`MAX_WORD` or nest past :data:`MAX_DEPTH`."""


def _name_end(text: str, i: int) -> int:
    while i < len(text) and (text[i].isalnum() or text[i] == "_"):
        i += 1
    return i


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Process one word: remove quotes, apply escapes, substitute variables."""
    _check_depth(word)
    out, _ = _process(word, 0, env, escape, stop="")
    return out


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


def expand_heredoc(text: str, env: Mapping[str, str]) -> str:
    """A heredoc's content: variables substituted, quotes and escapes left alone."""
    _check_depth(text)
    out: list[str] = []
    size = len(text)
    i = 0
    while i < len(text):
        if text[i] == "$":
            value, i = _variable(text, i, env, "\\")
            size = _grown(size, value)
            out.append(value)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _process(text: str, i: int, env: Mapping[str, str], escape: str, stop: str) -> tuple[str, int]:
    out: list[str] = []
    size = len(text)
    while i < len(text):
        c = text[i]
        if stop and c == stop:
            return "".join(out), i
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ExpansionError(
                    f"unexpected end of statement while looking for matching ' in {text!r}"
                )
            out.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise ExpansionError(
                        f'unexpected end of statement while looking for matching " in {text!r}'
                    )
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < len(text) and text[i + 1] in ('"', "$", escape, "`"):
                    out.append(text[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _variable(text, i, env, escape)
                    size = _grown(size, value)
                    out.append(value)
                else:
                    out.append(c)
                    i += 1
        elif c == escape:
            if i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        elif c == "$":
            value, i = _variable(text, i, env, escape)
            size = _grown(size, value)
            out.append(value)
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _variable(text: str, i: int, env: Mapping[str, str], escape: str) -> tuple[str, int]:
    """Expand the ``$`` at ``i``; return the value and the index after it."""
    i += 1
    if i >= len(text):
        return "$", i
    if text[i] == "{":
        end = _name_end(text, i + 1)
        name = text[i + 1 : end]
        if not name:
            raise ExpansionError(f"bad substitution in {text!r}")
        if end < len(text) and text[end] == "}":
            return env.get(name, ""), end + 1
        modifier = text[end : end + 2] if text[end : end + 1] == ":" else text[end : end + 1]
        if modifier not in (":-", "-", ":+", "+", ":?", "?"):
            raise ExpansionError(f"unsupported modifier ({text[end : end + 1]}) in substitution")
        word, j = _process(text, end + len(modifier), env, escape, stop="}")
        if j >= len(text):
            raise ExpansionError(f"missing '}}' in {text!r}")
        is_set = name in env
        empty_ok = not modifier.startswith(":")
        present = is_set and (empty_ok or env[name] != "")
        if modifier.endswith("-"):
            value = env[name] if present else word
        elif modifier.endswith("+"):
            value = word if present else ""
        else:
            if not present:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            value = env[name]
        return value, j + 1
    end = _name_end(text, i)
    if end == i:
        return "$", i
    return env.get(text[i:end], ""), end


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes; quotes and escapes are kept for :func:`expand`."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            current.append(c)
            if c == escape and quote == '"' and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in ("'", '"'):
            quote = c
            current.append(c)
        elif c == escape and i + 1 < len(text):
            current.append(c + text[i + 1])
            i += 1
        elif c.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(c)
        i += 1
    if current:
        words.append("".join(current))
    return words
