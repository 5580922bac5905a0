"""Symbolic file modes (``u+x,g-w``), as LLB's ``FileActionCopy.modeStr`` carries them and
``COPY --chmod`` writes them: parsed for checking, applied per copied entry."""

from __future__ import annotations

__all__ = ["apply_symbolic", "parse_symbolic"]

_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}


def parse_symbolic(text: str) -> list[tuple[str, str, str]]:
    """``u+x,g=r`` → [(who, op, perms)]; raises ``ValueError`` on anything else."""
    clauses = []
    for clause in text.split(","):
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            i += 1
        if i >= len(clause) or clause[i] not in "+-=":
            raise ValueError(f"invalid mode {text!r}")
        who, op, perms = clause[:i] or "a", clause[i], clause[i + 1 :]
        if any(p not in "rwxXst" for p in perms):
            raise ValueError(f"invalid mode {text!r}")
        clauses.append((who, op, perms))
    return clauses


def apply_symbolic(mode: int, text: str, is_dir: bool) -> int:
    """Apply a chmod-style symbolic mode to ``mode``, as ``COPY --chmod=u+x`` does."""
    for who, op, perms in parse_symbolic(text):
        mask = 0
        for w in who:
            mask |= _WHO[w]
        bits = 0
        for p in perms:
            if p == "X":
                if is_dir or mode & 0o111:
                    bits |= 0o111
            else:
                bits |= _PERM[p]
        bits &= mask
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mode = (mode & ~(mask & 0o7777)) | bits
    return mode
