"""BuildKit's "did you mean" hints (its ``suggest`` package): the nearest of some options."""

from __future__ import annotations

from collections.abc import Iterable

#: what BuildKit v0.11 suggests for a base image it cannot resolve, besides the stage names
#: (the ``docker.io/library`` forms without their slash, as v0.11 spells them)
COMMON_IMAGES = tuple(
    form
    for name in ("alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora")
    for form in (
        name,
        f"docker.io/library{name}",
        f"{name}:latest",
        f"docker.io/library{name}:latest",
    )
)


def distance(a: str, b: str) -> int:
    """Levenshtein's distance: the edits from ``a`` to ``b``."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def nearest(value: str, options: Iterable[str], *, case_sensitive: bool = True) -> str:
    """The option fewer than 3 edits from ``value`` (the first of the closest), or "" when
    none is or ``value`` is one of them (then the error is about something else). Without
    ``case_sensitive``, options are compared lower-cased and given in ``value``'s case."""
    wanted = value if case_sensitive else value.lower()
    best, found = 3, ""
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == wanted:
            return ""
        gap = distance(wanted, candidate)
        if gap < best:
            best, found = gap, candidate
    if case_sensitive or not found or value == value.lower():
        return found
    return found.upper() if value == value.upper() else found


def hint(value: str, options: Iterable[str], *, case_sensitive: bool = True) -> str:
    """`` (did you mean OPTION?)`` after an error about ``value``, or ""."""
    found = nearest(value, options, case_sensitive=case_sensitive)
    return f" (did you mean {found}?)" if found else ""
