"""Build an LLB graph with llbkit's Python SDK and write the definition to standard output.

    .venv/bin/python examples/hello_llb.py | .venv/bin/llbkit debug dump-llb

The same bytes are what BuildKit's Go client would write for this graph, so
`buildctl build` accepts them too.
"""

from __future__ import annotations

import sys

from llbkit.sdk import llb


def graph() -> llb.State:
    base = llb.image("busybox:latest").with_env("PATH", "/bin").with_dir("/work")
    built = base.run(
        shell="echo built > /work/out.txt && ls /cache",
        mounts=[llb.Cache("/cache", id="demo-cache", sharing="locked")],
        custom_name="build the output",
    ).root()
    config = llb.scratch().file(
        llb.mkdir("/etc/app", 0o755, make_parents=True).mkfile("/etc/app/config", 0o644, b"x=1\n")
    )
    result = llb.scratch().file(llb.copy(built, "/work/out.txt", "/out.txt"))
    return llb.merge([result, config])


def main() -> int:
    if sys.stdout.isatty():
        print("refusing to write a binary definition to a terminal; pipe it:", file=sys.stderr)
        print("  python examples/hello_llb.py | llbkit debug dump-llb", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(graph().marshal(llb.Platform("linux", "amd64")).to_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
