"""A small "site" build that needs no container: copies from a local context, generated files,
a merge and a diff. Writes the definition to standard output.

    .venv/bin/python examples/site_llb.py | \\
        .venv/bin/llbkit build --local site=examples/site --output type=local,dest=out/site
"""

from __future__ import annotations

import sys

from llbkit.sdk import llb


def graph() -> llb.State:
    site = llb.local("site", exclude_patterns=["drafts", "*.txt"])
    pages = llb.scratch().file(
        llb.copy(site, "/pages/*.md", "/www/", allow_wildcard=True, create_dest_path=True),
        custom_name="copy pages",
    )
    generated = llb.scratch().file(
        llb.mkdir("/www/meta", 0o755, make_parents=True)
        .mkfile("/www/meta/robots.txt", 0o644, b"User-agent: *\nAllow: /\n")
        .mkfile("/www/meta/version", 0o644, b"1\n"),
        custom_name="generate metadata",
    )
    combined = llb.merge([pages, generated])
    finished = combined.file(llb.rm("/www/meta/version"), custom_name="drop build-only files")
    # Only what the last step changed, as its own layer.
    return llb.merge([finished, llb.diff(combined, finished)])


def main() -> int:
    if sys.stdout.isatty():
        print("refusing to write a binary definition to a terminal; pipe it:", file=sys.stderr)
        print(
            "  python examples/site_llb.py | llbkit build --local site=examples/site",
            file=sys.stderr,
        )
        return 1
    sys.stdout.buffer.write(graph().marshal(llb.Platform("linux", "amd64")).to_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
