"""Cases where llbkit still differs from BuildKit v0.11.6, each with the difference named. The
replay marks them xfail (strict: a case that starts passing must leave this list)."""

from __future__ import annotations

#: BuildKit keeps one record per layer blob, described by the first image it was pulled as:
#: the recording pulled busybox first, so the base layer that the nopath and rich images share
#: with it is "pulled from …/busybox@…" in their history. llbkit names a layer after the image
#: the build pulled it as (each replay starts from an empty state root).
_SHARED_BLOB = (
    "a layer shared with another image is described by the image the build pulled "
    "(BuildKit: by the image first pulled into its cache)"
)
#: Go's filepath.Match: [^a] negates, [!a] is the class of '!' and 'a'. llbkit's COPY wildcards
#: (core/fs/contenthash.py glob) use Python's fnmatch, where [!a] negates and ^ is literal.
_GLOB = "COPY wildcard classes: [!a]/[^a] read as Python's fnmatch, not Go's filepath.Match"
#: the file op's copy wording (core/ops/copier.py)
_COPY_ERROR = (
    "copying a directory over a file: llbkit says 'cannot copy a directory over the "
    "non-directory <path on the host>', BuildKit 'cannot copy to non-directory: /d'"
)

KNOWN: dict[str, str] = {
    **dict.fromkeys(
        [
            "hand-nopath-env",
            "hand-nopath-cmd",
            "hand-nopath-only",
            "hand-rich-override",
            "hand-rich-cmd-kept",
            "gen-026",
            "gen-027",
            "gen-078",
            "gen-100",
            "gen-101",
            "gen-102",
            "gen-103",
            "gen-104",
            "gen-105",
            "gen-185",
        ],
        _SHARED_BLOB,
    ),
    **dict.fromkeys(
        [
            "hand-copy-glob-not-bang",
            "hand-copy-glob-not-caret",
            "gen-058",
            "gen-059",
            "gen-060",
            "gen-133",
            "gen-134",
            "gen-135",
            "gen-156",
        ],
        _GLOB,
    ),
    **dict.fromkeys(["gen-061", "gen-062", "gen-063", "gen-064"], _COPY_ERROR),
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
