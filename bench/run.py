"""llbkit beside BuildKit (buildctl, docker build) and buildah, on the same work, in one run.

    scripts/bench.sh [--quick] [--full-scale] [--runs N] [--out DIR]
                     [--scenario NAME]... [--tool NAME]...

Starts Debian's docker-registry on loopback with a busybox image made from the host's
busybox-static, starts each installed peer on private state (buildkitd from PATH, dockerd on
its own socket, buildah with its own storage), then runs every scenario with every tool in
turn, several times (the order rotates from run to run), and prints and saves medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import MB, Results, Timed, save, text
from scenarios import SCENARIOS, Measure, Sizes, Work
from tools import TOOLS, Tool, Unsupported, s3_client

from llbkit.sdk.testing.registry import LocalRegistry, busybox_layer, push_image


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller work, one run each")
    parser.add_argument(
        "--full-scale",
        action="store_true",
        help="scaling scenarios up to a 10,000-op graph and a 50,000-file context",
    )
    parser.add_argument(
        "--scale-budget",
        type=float,
        metavar="SECONDS",
        help="a scaling series stops after a size that took longer (default 120)",
    )
    parser.add_argument("--runs", type=int, help="runs per tool and scenario (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="where results go")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--tool", action="append", choices=[t.name for t in TOOLS])
    return parser.parse_args()


def _start_tools(names: list[str] | None, work: Path, registry: str) -> list[Tool]:
    started = []
    for kind in TOOLS:
        if (names and kind.name not in names) or (not names and kind.opt_in):
            continue
        reason = kind.missing()
        if reason is None:
            tool = kind(work, registry)
            try:
                tool.start()
            except (OSError, RuntimeError) as err:
                reason = str(err)
            else:
                started.append(tool)
                continue
        print(f"bench: {kind.name} left out: {reason}", file=sys.stderr)
    return started


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    """moto's S3 server in its own process with a ``bench`` bucket: its endpoint, or "" when
    moto is not installed (the S3 cache scenario is then left out)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        print("bench: moto_server is not installed; ci-cache left out", file=sys.stderr)
        yield ""
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = s3_client(url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    args = _arguments()
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.full_scale:
        sizes = sizes.full_scale()
    if args.scale_budget:
        sizes = replace(sizes, scale_budget=args.scale_budget)
    runs = args.runs or (1 if args.quick else 3)
    scratch = Path(tempfile.mkdtemp(prefix="llbkit-bench-", dir=os.environ.get("BENCH_TMP")))
    results = Results(
        meta={
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
            "python": platform.python_version(),
            "runs": runs,
            "quick": args.quick,
            "sizes": asdict(sizes),
        }
    )
    tools: list[Tool] = []
    try:
        with LocalRegistry(scratch / "registry") as registry, _moto() as s3:
            host = f"localhost:{registry.port}"
            # A history entry per layer, as real images have (buildah counts them).
            history = {"history": [{"created_by": "busybox-static from the host"}]}
            push_image(registry.host, "library/busybox:latest", [busybox_layer()], history)
            work = Work(scratch / "scenarios", f"{host}/library/busybox", sizes, s3)
            tools = _start_tools(args.tool, scratch / "tools", host)
            if not any(t.name == "llbkit" for t in tools):
                print("bench: llbkit itself could not start", file=sys.stderr)
                return 1
            results.meta["tools"] = [t.name for t in tools]
            for name, measure in SCENARIOS.items():
                if args.scenario and name not in args.scenario:
                    continue
                _scenario(name, measure, tools, work, runs=runs, results=results)
                print(text(_only(results, name)), end="", flush=True)
    finally:
        for tool in tools:
            try:
                tool.stop()
            except Exception as err:  # a peer that will not stop must not lose the results
                print(f"bench: stopping {tool.name}: {err}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
    print(text(results), end="")
    for path in save(results, args.out):
        print(f"bench: wrote {path}")
    return 0


def _scenario(
    name: str, measure: Measure, tools: list[Tool], work: Work, *, runs: int, results: Results
) -> None:
    active = list(tools)
    for n in range(runs):
        # Alternate who goes first, so no tool always runs on a freshly settled machine.
        for tool in active[n % len(active) :] + active[: n % len(active)]:
            if tool.name in results.errors.get(name, {}):
                continue
            start = time.monotonic()
            try:
                times = measure(tool, work)
            except Unsupported:
                results.unsupported.setdefault(name, []).append(tool.name)
                active.remove(tool)
                continue
            except Exception as err:
                results.errors.setdefault(name, {})[tool.name] = str(err)[:300]
                print(f"bench: {name} with {tool.name} failed: {err}", file=sys.stderr)
                continue
            results.add(name, tool.name, times)
            shown = ", ".join(_shown(k, v) for k, v in times.items())
            print(
                f"bench: {name} run {n + 1}/{runs} {tool.name}: {shown} "
                f"({time.monotonic() - start:.0f}s)",
                file=sys.stderr,
            )


def _shown(phase: str, value: Timed | str) -> str:
    if isinstance(value, str):
        return f"{phase} failed"
    peak = f" {value.peak / MB:.0f}MB" if value.peak is not None else ""
    return f"{phase} {value.seconds:.2f}s{peak}"


def _only(results: Results, scenario: str) -> Results:
    return Results(
        results.meta,
        {scenario: results.seconds.get(scenario, {})},
        {scenario: results.errors.get(scenario, {})},
        {scenario: results.unsupported.get(scenario, [])},
        {scenario: results.peaks.get(scenario, {})},
        {scenario: results.rates.get(scenario, {})},
    )


if __name__ == "__main__":
    sys.exit(main())
