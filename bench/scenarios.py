"""The work every tool is measured on, generated here (no downloads): Dockerfiles on a busybox
base in the loopback registry, a large context, and LLB graphs from the sdk.

Each scenario's ``measure`` starts from an empty cache (``tool.reset()``), does its untimed
preparation, and returns the seconds of each timed phase, e.g. ``{"cold": 1.2, "warm": 0.3}``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from graphs import chain, wide
from memory import CLIENTS, Peak
from report import Timed
from tools import Build, Tool, Unsupported, s3_client

from llbkit.sdk import llb


@dataclass(frozen=True)
class Sizes:
    """How big the work is: the full figures, or ``--quick``'s smaller ones."""

    steps: int = 30
    files: int = 5000
    context_bytes: int = 156 * 10**6
    graph: int = 1000
    builds: int = 4
    #: the scaling scenarios' graphs (ops) and contexts (files of ``SCALE_FILE`` bytes)
    scale_ops: tuple[int, ...] = (1000, 2500, 5000)
    scale_files: tuple[int, ...] = (5000, 10000, 25000)
    #: seconds after which a scaling series stops growing for a tool
    scale_budget: float = 120.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            steps=10,
            files=500,
            context_bytes=16 * 10**6,
            graph=200,
            scale_ops=(50, 100, 200),
            scale_files=(250, 500, 1000),
        )

    def full_scale(self) -> Sizes:
        """The scaling scenarios up to a 10,000-op graph and a 50,000-file context."""
        return replace(
            self, scale_ops=(1000, 2500, 5000, 10000), scale_files=(5000, 10000, 25000, 50000)
        )


@dataclass
class Work:
    """Where the scenarios' files are, the base image every Dockerfile starts from, and the
    loopback S3 endpoint (moto) the cache scenario shares between tools ("" without one)."""

    root: Path
    base: str
    sizes: Sizes
    s3: str = ""


def _busy_ms() -> int:
    """Milliseconds the disks have spent doing I/O since boot (all of them, summed)."""
    try:
        lines = Path("/proc/diskstats").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(f[12]) for f in (line.split() for line in lines) if len(f) > 12)


def settle(limit: float = 30.0) -> None:
    """Wait until the disk is idle: the previous run's writes, deletions and the discards
    ext4 issues after them would otherwise slow whichever tool runs next."""
    os.sync()
    deadline = time.monotonic() + limit
    before = _busy_ms()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _busy_ms()
        if now - before < 25:  # under 5% busy over the last half second
            return
        before = now


def timed(tool: Tool, action: Callable[[], object]) -> Timed:
    """The seconds ``action`` takes, and the peak memory of the tool's processes meanwhile."""
    settle()
    with Peak(lambda: [*CLIENTS, *tool.daemons()]) as peak:
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
    return Timed(seconds, peak.bytes)


def _dockerfile(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(text)
    for name, content in (files or {}).items():
        (folder / name).write_text(content)
    return folder


# -- parallel stages ------------------------------------------------------------------------


PARALLEL = """\
ARG BASE
FROM $BASE AS slow1
RUN sleep 1 && echo one > /one
FROM $BASE AS slow2
RUN sleep 1 && echo two > /two
FROM $BASE AS quick
RUN echo three > /three
FROM $BASE
COPY --from=slow1 /one /one
COPY --from=slow2 /two /two
COPY --from=quick /three /three
"""


def parallel_stages(tool: Tool, work: Work) -> dict[str, Timed]:
    spec = Build(_dockerfile(work.root / "parallel", PARALLEL), {"BASE": work.base})
    tool.reset()
    cold = timed(tool, lambda: tool.build(spec))
    return {"cold": cold, "warm": timed(tool, lambda: tool.build(spec))}


# -- exec chain -----------------------------------------------------------------------------


def _chain(work: Work) -> Path:
    steps = "".join(f"RUN echo step {n} >> /steps.log\n" for n in range(work.sizes.steps))
    return _dockerfile(work.root / "exec", f"ARG BASE\nFROM $BASE\n{steps}")


def exec_chain(tool: Tool, work: Work) -> dict[str, Timed]:
    spec = Build(_chain(work), {"BASE": work.base})
    tool.reset()
    cold = timed(tool, lambda: tool.build(spec))
    return {"cold": cold, "cold, per step": replace(cold, seconds=cold.seconds / work.sizes.steps)}


# -- no-op rebuild --------------------------------------------------------------------------

MULTI_STAGE = """\
ARG BASE
FROM $BASE AS deps
RUN echo deps > /deps
FROM $BASE AS build
COPY app.txt /src/
RUN cat /src/app.txt > /built
FROM $BASE
COPY --from=deps /deps /deps
COPY --from=build /built /built
CMD ["cat", "/built"]
"""


def noop_rebuild(tool: Tool, work: Work) -> dict[str, Timed]:
    folder = _dockerfile(work.root / "noop", MULTI_STAGE, {"app.txt": "hello\n"})
    spec = Build(folder, {"BASE": work.base})
    tool.reset()
    tool.build(spec)
    return {"warm": timed(tool, lambda: tool.build(spec))}


# -- a large context, and exporting it ------------------------------------------------------

CONTEXT = """\
ARG BASE
FROM scratch AS export
COPY . /data/

FROM $BASE
COPY . /data/
RUN wc -c /data/d00/f0000.bin
"""


def _context(work: Work) -> Path:
    """``files`` files of incompressible data, ``context_bytes`` in all, made once per run."""
    folder = work.root / "context"
    if not (folder / "Dockerfile").exists():
        size = work.sizes.context_bytes // work.sizes.files
        for n in range(work.sizes.files):
            sub = folder / f"d{n // 100:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{n:04d}.bin").write_bytes(os.urandom(size))
        _dockerfile(folder, CONTEXT)
    return folder


def context(tool: Tool, work: Work) -> dict[str, Timed]:
    spec = Build(_context(work), {"BASE": work.base})
    tool.reset()
    times = {"cold": timed(tool, lambda: tool.build(spec))}
    times["warm, no change"] = timed(tool, lambda: tool.build(spec))
    victim = spec.context / "d01" / f"f{random.randrange(100, 200):04d}.bin"
    victim.write_bytes(os.urandom(victim.stat().st_size))
    times["warm, one file changed"] = timed(tool, lambda: tool.build(spec))
    return times


def export(tool: Tool, work: Work) -> dict[str, Timed]:
    if not tool.writes_oci:
        raise Unsupported
    times = {}
    out = work.root / "exports"
    out.mkdir(parents=True, exist_ok=True)
    for compression in ("gzip", "zstd"):
        dest = out / f"{tool.name}-{compression}.tar"
        spec = Build(_context(work), {"BASE": work.base}, target="export")
        tool.reset()
        tool.build(spec)
        exporting = Build(spec.context, spec.args, "export", dest, compression)
        try:
            times[compression] = timed(tool, lambda s=exporting: tool.build(s))
        finally:
            dest.unlink(missing_ok=True)
    return times


# -- a CI job: a fresh root importing a registry cache ---------------------------------------

#: a Dockerfile step that does work, as both tools name its vertex: ``[stage-1 2/3] COPY . /data/``
_STEP = re.compile(r"^\[[^\]]+\] (RUN|COPY|ADD) ")


def _missed(trace: Path) -> str:
    """Why a build's ``--trace`` shows it did not come from the cache, or "" if it did.

    A step is a hit if any of its records says cached: BuildKit reports a hit, then starts the
    step again, uncached, while the exporter fetches its lazy layers (statuses only, no logs).
    """
    names: dict[str, str] = {}
    cached: dict[str, bool] = {}
    for line in trace.read_text().splitlines():
        for vertex in json.loads(line)["Vertexes"] or []:
            if _STEP.match(vertex["Name"]):
                digest = vertex["Digest"]
                names[digest] = vertex["Name"]
                cached[digest] = cached.get(digest, False) or vertex["Cached"]
    ran = [names[d] for d, hit in cached.items() if not hit]
    if not names:
        return "no Dockerfile step in the trace"
    return f"cache missed: {len(ran)} of {len(names)} steps ran ({ran[0]})" if ran else ""


def _imported(
    tool: Tool, work: Work, builds: Mapping[str, Build], caches: Mapping[str, str]
) -> dict[str, Timed | str]:
    """Each build on emptied state, importing its cache, exported as an oci tarball."""
    tool.reset()
    out = work.root / "exports"
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, Timed | str] = {}
    for name, spec in builds.items():
        dest, trace = out / f"{tool.name}-{name}.tar", out / f"{tool.name}-{name}.trace"
        importing = replace(spec, oci=dest, import_cache=caches[name], trace=trace)
        try:
            took = timed(tool, lambda s=importing: tool.build(s))
            missed = _missed(trace)
        finally:
            dest.unlink(missing_ok=True)
            trace.unlink(missing_ok=True)
        # A build that ran its steps measured something else: say so instead of a figure.
        times[f"{name} import"] = f"{missed} in {took.seconds:.2f}s" if missed else took
    return times


def _cache_builds(work: Work) -> dict[str, Build]:
    return {
        "chain": Build(_chain(work), {"BASE": work.base}),
        "context": Build(_context(work), {"BASE": work.base}),
    }


def ci_cache(tool: Tool, work: Work) -> dict[str, Timed | str]:
    """A CI job on S3 (moto, one bucket, each tool under its own prefix): the exec chain and
    the context build, each built, then built again exporting its cache (mode=max) to S3 —
    timed: every step is cached, so this is compressing and uploading the layers — then, on
    emptied state, built importing it and exported as an oci tarball."""
    if not tool.moves_cache or not work.s3:
        raise Unsupported
    builds = _cache_builds(work)
    run_id = f"{tool.name}-{time.monotonic_ns()}"
    caches = {
        name: ",".join(
            [
                "type=s3",
                "bucket=bench",
                "region=us-east-1",
                f"endpoint_url={work.s3}",
                "use_path_style=true",
                "access_key_id=bench",
                "secret_access_key=bench",
                f"prefix={run_id}/",
                f"name={name}",
            ]
        )
        for name in builds
    }
    tool.reset()
    times: dict[str, Timed | str] = {}
    for name, spec in builds.items():
        tool.build(spec)
        exporting = replace(spec, export_cache=f"{caches[name]},mode=max")
        before = _stored(work.s3, f"{run_id}/")
        took = timed(tool, lambda s=exporting: tool.build(s))
        # The upload throughput: what the phase added to the bucket over the phase's time.
        times[f"{name} export"] = replace(took, sent=_stored(work.s3, f"{run_id}/") - before)
    times.update(_imported(tool, work, builds, caches))
    return times


def _stored(endpoint: str, prefix: str) -> int:
    """Bytes of the objects under ``prefix`` in the ``bench`` bucket (read untimed)."""
    listing = s3_client(endpoint).get_paginator("list_objects_v2")
    pages = listing.paginate(Bucket="bench", Prefix=prefix)
    return sum(item["Size"] for page in pages for item in page.get("Contents", []))


def ci_cache_registry(tool: Tool, work: Work) -> dict[str, Timed | str]:
    """The exec chain and the context build, each exported to a registry cache (mode=max) and
    then, on emptied state, built again importing it and exported as an oci tarball."""
    if not tool.moves_cache:
        raise Unsupported
    builds = _cache_builds(work)
    refs = {name: f"{tool.registry}/bench-cache/{tool.name}-{name}:latest" for name in builds}
    tool.reset()
    for name, spec in builds.items():
        tool.build(replace(spec, export_cache=f"type=registry,ref={refs[name]},mode=max"))
    return _imported(
        tool, work, builds, {name: f"type=registry,ref={ref}" for name, ref in refs.items()}
    )


# -- graph scale (LLB) ----------------------------------------------------------------------


def graph_scale(tool: Tool, work: Work) -> dict[str, Timed | str]:
    if not tool.takes_llb:
        raise Unsupported
    times: dict[str, Timed | str] = {}
    for name, make in (("wide", wide), ("chain", chain)):
        data = make(work.sizes.graph).marshal(llb.Platform("linux", "amd64")).to_bytes()
        tool.reset()
        phase = f"{name}-{work.sizes.graph} cold"
        try:
            times[phase] = timed(tool, lambda d=data: tool.build_llb(d))
        except RuntimeError as err:  # one graph failing says nothing about the other
            times[phase] = str(err)
    return times


# -- how time and memory grow with the graph's and the context's size -----------------------

#: bytes in each file of a scaling context: small, so the figures are about the number of files
SCALE_FILE = 1024


def over_budget(work: Work, times: Mapping[str, Timed | str], phase: str) -> str:
    """Why the next size of ``phase``'s series is not run, or "": a size that failed or took
    longer than ``scale_budget`` is the last of its series for that tool (the next, at least
    twice as big, would take minutes more to show what this one shows)."""
    took, budget = times.get(phase), work.sizes.scale_budget
    if isinstance(took, str):  # failed, or itself not run
        return took if took.startswith("not run") else "not run: the size before failed"
    if isinstance(took, Timed) and took.seconds > budget:
        return f"not run: the size before took {took.seconds:.0f}s (over {budget:.0f}s)"
    return ""


def scale_graph(tool: Tool, work: Work) -> dict[str, Timed | str]:
    """The wide and the chain graph at each of ``scale_ops``, each cold."""
    if not tool.takes_llb:
        raise Unsupported
    times: dict[str, Timed | str] = {}
    for name, make in (("wide", wide), ("chain", chain)):
        before = ""
        for n in work.sizes.scale_ops:
            phase = f"{name}, {n} ops"
            skipped = over_budget(work, times, before)
            before = phase
            if skipped:
                times[phase] = skipped
                continue
            data = make(n).marshal(llb.Platform("linux", "amd64")).to_bytes()
            tool.reset()
            try:
                times[phase] = timed(tool, lambda d=data: tool.build_llb(d))
            except RuntimeError as err:  # a size failing says nothing about the others
                times[phase] = str(err)
    return times


SCALE_CONTEXT = """\
FROM scratch
COPY . /data/
"""


def _files(work: Work, n: int) -> Path:
    """A context of ``n`` files of ``SCALE_FILE`` random bytes, 100 to a folder, made once."""
    folder = work.root / f"files-{n}"
    if not (folder / "Dockerfile").exists():
        for i in range(n):
            sub = folder / f"d{i // 100:03d}"
            if i % 100 == 0:
                sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i:05d}").write_bytes(os.urandom(SCALE_FILE))
        _dockerfile(folder, SCALE_CONTEXT)
    return folder


def scale_context(tool: Tool, work: Work) -> dict[str, Timed | str]:
    """``COPY . /data/`` of each of ``scale_files``: cold, then again after one file changed."""
    times: dict[str, Timed | str] = {}
    before = ""
    for n in work.sizes.scale_files:
        skipped = over_budget(work, times, before)
        before = f"cold, {n} files"
        if skipped:
            times[before] = skipped
            continue
        spec = Build(_files(work, n))
        tool.reset()
        for phase in (f"cold, {n} files", f"one file changed, {n} files"):
            if phase.startswith("one"):
                victim = spec.context / "d000" / f"f{random.randrange(100):05d}"
                victim.write_bytes(os.urandom(SCALE_FILE))
            try:
                times[phase] = timed(tool, lambda s=spec: tool.build(s))
            except RuntimeError as err:  # a size failing says nothing about the others
                times[phase] = str(err)
                break
    return times


# -- concurrency ----------------------------------------------------------------------------

SHARED_BASE = """\
ARG BASE
FROM $BASE AS base
RUN sleep 1 && echo base > /base
FROM base
ARG N
RUN echo "$N" > /n && cat /base
"""


def concurrency(tool: Tool, work: Work) -> dict[str, Timed]:
    folder = _dockerfile(work.root / "concurrency", SHARED_BASE)
    specs = [Build(folder, {"BASE": work.base, "N": str(n)}) for n in range(work.sizes.builds)]
    tool.reset()
    return {f"{len(specs)} builds, cold": timed(tool, lambda: tool.build_many(specs))}


#: seconds and peak memory by phase, or why a phase failed
Measure = Callable[[Tool, Work], Mapping[str, Timed | str]]

SCENARIOS: dict[str, Measure] = {
    "parallel-stages": parallel_stages,
    "exec-chain": exec_chain,
    "noop-rebuild": noop_rebuild,
    "context": context,
    "export": export,
    "graph-scale": graph_scale,
    "scale-graph": scale_graph,
    "scale-context": scale_context,
    "concurrency": concurrency,
    "ci-cache": ci_cache,
    "ci-cache-registry": ci_cache_registry,
}


def cleanup(work: Work) -> None:
    shutil.rmtree(work.root, ignore_errors=True)
