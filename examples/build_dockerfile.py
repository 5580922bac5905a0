"""Build a Dockerfile from Python with llbkit's Controller: no daemon, no registry.

    .venv/bin/python examples/build_dockerfile.py [--root DIR]

Writes a small Dockerfile and its context into a temporary directory, makes a busybox base
image as an OCI layout (examples/busybox_layout.py), and builds it: each step is printed from
the build's status stream as it runs, a file is read out of the result while the build holds
it, and the image is exported as an OCI tarball whose digest is printed. The RUN step needs
root and runc. Without ``--root`` the state root is temporary; with one, a second run shows
the steps as CACHED.
"""

from __future__ import annotations

import argparse
import codecs
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from llbkit.core.control import (
    BuildFailed,
    Controller,
    EmbeddedClient,
    ExporterRequest,
    FrontendFailed,
    SolveRequest,
    UserError,
    Vertex,
    new_ref,
    one_error,
)

DOCKERFILE = """\
FROM busybox AS build
ARG GREETING
WORKDIR /src
COPY greeting.txt .
RUN echo "greeting: $GREETING" && tr a-z A-Z < greeting.txt > shout.txt && wc -c shout.txt

FROM busybox
COPY --from=build /src/shout.txt /app/shout.txt
CMD ["cat", "/app/shout.txt"]
"""


def busybox_layout(dest: Path) -> str:
    """The base image as an OCI layout at ``dest``; returns its manifest digest."""
    script = Path(__file__).with_name("busybox_layout.py")
    made = subprocess.run(
        [sys.executable, str(script), str(dest)], check=True, capture_output=True, text=True
    )
    return made.stdout.strip()


class StepPrinter:
    """Prints each step of a build as its status records arrive: its name when it starts,
    its log lines, then CACHED, DONE or ERROR."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.ended: set[str] = set()
        # Output arrives in chunks that may split a line, or a character.
        self.partial: dict[str, str] = {}
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}

    def start(self, vertex: Vertex) -> None:
        if vertex.digest not in self.numbers:
            self.numbers[vertex.digest] = len(self.numbers) + 1
            print(f"#{self.numbers[vertex.digest]} {vertex.name}", flush=True)

    def log(self, digest: str, data: bytes, *, final: bool = False) -> None:
        if digest not in self.decoders:
            self.decoders[digest] = codecs.getincrementaldecoder("utf-8")("replace")
        text = self.partial.pop(digest, "") + self.decoders[digest].decode(data, final)
        *lines, rest = text.split("\n")
        if not final:
            self.partial[digest] = rest
        elif rest:
            lines.append(rest)
        for line in lines:
            print(f"#{self.numbers.get(digest, '?')} | {line}", flush=True)

    def end(self, vertex: Vertex) -> None:
        self.ended.add(vertex.digest)
        self.log(vertex.digest, b"", final=True)
        n = self.numbers[vertex.digest]
        if vertex.error:
            print(f"#{n} ERROR: {vertex.error}", flush=True)
        elif vertex.cached or vertex.started is None or vertex.completed is None:
            print(f"#{n} CACHED", flush=True)
        else:
            print(f"#{n} DONE {vertex.completed - vertex.started:.1f}s", flush=True)

    async def follow(self, controller: Controller, ref: str) -> None:
        async for batch in controller.status(ref):
            # Each change of a step is a new record; the latest one holds.
            running = [v for v in batch.vertexes if v.started is not None or v.cached]
            for vertex in running:
                self.start(vertex)
            for log in batch.logs:
                self.log(log.vertex, log.data)
            for warning in batch.warnings:
                print(f"WARNING: {warning.short}", flush=True)
            # A batch groups records by kind: a step's end is printed after its last logs.
            for vertex in running:
                if vertex.completed is not None and vertex.digest not in self.ended:
                    self.end(vertex)


async def build(controller: Controller, work: Path) -> None:
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "greeting.txt").write_text("hello from python\n")
    digest = busybox_layout(work / "busybox-layout")
    request = SolveRequest(
        ref=new_ref(),
        session=EmbeddedClient(
            locals={"context": context, "dockerfile": context},
            layouts={"busybox": work / "busybox-layout"},
        ),
        frontend="dockerfile.v0",
        frontend_attrs={
            "context:busybox": f"oci-layout://busybox@{digest}",
            "build-arg:GREETING": "hi",
        },
        exporters=[ExporterRequest("oci", {"dest": str(work / "image.tar")})],
    )
    async with anyio.create_task_group() as tg:
        # Attached before the build starts: the ref is ours, so no record is missed.
        tg.start_soon(StepPrinter().follow, controller, request.ref)
        async with controller.build(request) as outcome:
            result = outcome.result.refs["linux/amd64"]
            async with result.mount() as tree:
                shout = (tree / "app/shout.txt").read_text()
            print(f"read from the result: /app/shout.txt = {shout.strip()}")
            print(f"image digest: {outcome.exporter_response['containerimage.digest']}")


def report(err: UserError) -> None:
    """As ``llbkit build`` reports a failure: the failed step's last lines, where in the
    Dockerfile it comes from, then the one-line error."""
    if isinstance(err, BuildFailed) and err.log_tail:
        print(f" > {err.name}:", *err.log_tail, sep="\n", file=sys.stderr)
    if isinstance(err, BuildFailed | FrontendFailed) and err.source:
        print(err.source, file=sys.stderr)
    print(f"error: {err}", file=sys.stderr)


async def main(root: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="llbkit-example-") as tmp:
        work = Path(tmp)
        try:
            with Controller.open(root or work / "state") as controller, one_error():
                await build(controller, work)
        except UserError as err:
            report(err)
            return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="the state root (default: a temporary one)")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.root))
