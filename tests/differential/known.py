"""Cases where llbkit still differs from BuildKit v0.11.6, each with the difference named. The
replay marks them xfail (strict: a case that starts passing must leave this list)."""

from __future__ import annotations

#: BuildKit's client (fsutil's walker, with moby/patternmatcher) reads the context's follow
#: paths before the daemon sees a wildcard: a malformed one fails there, in its words.
_SENDER = (
    "a malformed COPY wildcard: BuildKit's client refuses it while sending the context "
    "('error from sender: … includepatterns …'); llbkit's copy says 'syntax error in pattern'"
)

KNOWN: dict[str, str] = {
    **dict.fromkeys(
        [
            "hand-copy-glob-reversed-range",
            "hand-copy-glob-unterminated",
            "hand-copy-glob-unterminated-later",
            "hand-copy-glob-dash-first",
            "hand-copy-glob-bad-under-dir",
            "hand-add-glob-unterminated",
        ],
        _SENDER,
    ),
    "hand-run-security-bad": (
        "RUN --security is read (BuildKit's labs syntax; v0.11's built-in frontend says "
        "'unknown flag: security'), so a bad mode is worded otherwise; see "
        "docs/compatibility.md"
    ),
    "hand-copy-chmod-bad": (
        "an invalid COPY --chmod is refused; BuildKit v0.11 ignores it silently (see "
        "docs/compatibility.md)"
    ),
}
