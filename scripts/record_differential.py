#!/usr/bin/env python3
"""Record what BuildKit builds from every differential case (tests/differential/): the changed
tree, the image config and history, or the error, into tests/differential/vectors/<category>.json
with the generator's seed and BuildKit's version.

    BUILDCTL=/path/to/buildctl BUILDKIT_HOST=unix:///run/buildkit.sock \\
        .venv/bin/python scripts/record_differential.py [--seed N] [--count N] [name...]

Needs buildkitd v0.11.6 reaching 127.0.0.1:5155 (or ``--port``) over plain HTTP
(``[registry."127.0.0.1:5155"] http = true``), granting what cases ask with ``--allow``
(``--allow-insecure-entitlement network.host --allow-insecure-entitlement
security.insecure``), docker-registry and busybox-static, and nothing
else building on that buildkitd: its cache is pruned (``buildctl prune --all``) as it records.
Names, when given, re-record only those cases (in place, keeping the others). Cases with
frontend inputs are recorded with ``BUILDKIT_INPUTS``, a client that passes them
(scripts/bkinputs.go), since buildctl cannot.

BuildKit describes a base layer that its image has no history for (``pulled from REF@DIGEST``)
by the image whose pull first fetched the layer's blob; a layer not fetched yet (a build that
needs only the image's config) is ``created by buildkit``. The busybox, rich and no-PATH images
share busybox's layer. So each case is recorded on a warm cache of its own base: after a prune,
a ``RUN`` on the base fetches its layers, then the cases naming only busybox are recorded
together and each naming another base alone, after its own prune and warm-up. Every image's
layers are then described by that image, as on a daemon that has built from it before.

With --exports, records instead each export case (tests/differential/exports.py): the shared
build exported with each exporter option, into tests/differential/vectors/exports/exports.json.

With --llb, records instead the definitions BuildKit's own Dockerfile frontend makes of every
case whose inputs are the client's two directories (DF2LLB: scripts/df2llb.go built), into
tests/differential/vectors/llb/llb.json.

With --cache-keys, records instead the cache BuildKit exports (``--export-cache type=local,
mode=max``) when it builds each case whose LLB is compared: every record's digest and its
inputs' link selectors, into tests/differential/vectors/cachekeys/records.json.

With --progress, records instead buildctl's plain progress of a warm rebuild (each case built
twice, the second build's steps kept: names and markers, see harness.progress_steps) for every
recorded multi-stage or remote-context case BuildKit builds, into
tests/differential/vectors/progress/warm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.differential import cases as handwritten  # noqa: E402
from tests.differential.exports import (  # noqa: E402
    CASES as EXPORT_CASES,
)
from tests.differential.exports import (  # noqa: E402
    DOCKERFILE as EXPORT_DOCKERFILE,
)
from tests.differential.exports import (  # noqa: E402
    EXPORTS,
    WARM_OUTPUT,
    ExportCase,
    export_error,
    export_result,
    load_exports,
    output_flag,
)
from tests.differential.harness import (  # noqa: E402
    BUILDKIT_VERSION,
    CACHE_KEYS,
    LLB,
    PROGRESS,
    REMOTE_MARK,
    VECTORS,
    Case,
    agent_sockets,
    busybox_tree,
    error_cause,
    image_configs,
    input_definitions,
    llb_compared,
    load_llb,
    load_vectors,
    materialize,
    normalize_llb,
    opts,
    progress_recorded,
    progress_steps,
    push_images,
    result_of,
    serve_remote,
    shared_dirs,
    substitute,
)

#: the registry's port: one the buildkitd config says is plain HTTP (or --port)
PORT = int(os.environ.get("REGISTRY_PORT", "5155"))
#: the bases that share busybox's layer (see the module's docstring)
ISOLATED = ("@RICH@", "@NOPATH@")


def fresh(buildctl: str, registry: str, base: str) -> None:
    """An empty cache but for ``base``'s layers, fetched as ``base`` (a mark of IMAGES)."""
    subprocess.run([buildctl, "prune", "--all"], capture_output=True, check=True)
    warm = Case("warm", "config", f"FROM {base}\nRUN true\n")
    found = record(warm, buildctl, registry, {})
    if "error" in found or "unreadable" in found:
        raise SystemExit(f"cannot pull {base}: {found}")


def isolated_base(case: Case) -> str | None:
    """The base other than busybox that ``case`` names, if any: it is recorded alone. So is
    a case sharing other directories or OCI layouts (busybox its base): BuildKit's answer
    would depend on what other cases left in its cache. Their files' times differ, but not
    their content keys: a step another case ran on the same content is a hit, described as
    that case described it; and an image read from a layout another case shared is found
    even where this case shares none."""
    text = case.dockerfile + "".join(case.args.values())
    found = next((mark for mark in ISOLATED if mark in text), None)
    shares = (
        case.locals
        or case.layouts
        or case.inputs
        or any(v.startswith(("oci-layout:", "local:")) for v in case.options.values())
        or any(REMOTE_MARK in v for v in case.options.values())
    )
    return found or ("@BASE@" if shares else None)


def _buildctl(buildctl: str, dirs: tuple[Path, Path], *rest: str) -> list[str]:
    """buildctl's command line building the Dockerfile of ``dirs`` (its context and Dockerfile
    folders) with plain progress, then ``rest``."""
    ctx, dfdir = dirs
    return [
        buildctl,
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={dfdir}",
        "--progress",
        "plain",
        *rest,
    ]


def _case_command(buildctl: str, case: Case, registry: str, where: Path, out: str) -> list[str]:
    """buildctl building ``case``, its folders written under ``where``, into OCI output
    ``out``."""
    dirs = materialize(case, where, registry)
    options = [f"--opt={k}={v}" for k, v in opts(case, registry).items()]
    locals_, layouts = shared_dirs(case, where, registry)
    options += [f"--local={name}={path}" for name, path in locals_.items()]
    options += [f"--oci-layout={name}={path}" for name, path in layouts.items()]
    options += [f"--allow={entitlement}" for entitlement in case.allow]
    for n, (sid, content) in enumerate(case.secrets.items()):
        (where / f"secret-{n}").write_text(content)
        options.append(f"--secret=id={sid},src={where / f'secret-{n}'}")
    if case.inputs:
        # buildctl passes no frontend inputs: BUILDKIT_INPUTS names a client of BuildKit's
        # own Go client library that does (scripts/bkinputs.go), and takes the rest alike.
        inputs = []
        for name, data in input_definitions(case, registry).items():
            (where / f"{name}.def").write_bytes(data)
            inputs += ["--input", f"{name}={where / name}.def"]
        command = [os.environ["BUILDKIT_INPUTS"], *inputs, "--out", out]
        command += ["--local", f"context={dirs[0]}", "--local", f"dockerfile={dirs[1]}"]
        for flag in options:
            key, _, value = flag.partition("=")
            command += [key, value]
        return command
    return _buildctl(buildctl, dirs, *options, "--output", f"type=oci,dest={out}")


def record(case: Case, buildctl: str, registry: str, base: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, agent_sockets(case) as agents:
        command = _case_command(buildctl, case, registry, Path(tmp), "-")
        command += [f"--ssh={sid}={path}" for sid, path in agents.items()]
        done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode().strip().splitlines()
        return {"error": error_cause(lines[-1] if lines else "failed", registry)}
    try:
        return result_of(done.stdout, base, registry)
    except Exception as err:  # a harness bug: say which case, keep recording the others
        print(f"{case.name}: cannot read BuildKit's output: {err!r}", file=sys.stderr)
        return {"unreadable": repr(err)}


def record_progress(case: Case, buildctl: str, registry: str) -> list[list[str]]:
    """The steps buildctl shows when it builds ``case`` a second time."""
    with tempfile.TemporaryDirectory() as tmp:
        command = _case_command(buildctl, case, registry, Path(tmp), f"{tmp}/out.tar")
        for _ in range(2):
            done = subprocess.run(command, capture_output=True, check=False, text=True)
    return progress_steps(done.stderr, registry)


def main_progress(buildctl: str, names: list[str], port: int) -> int:
    from llbkit.sdk.testing.registry import LocalRegistry

    chosen = [
        c
        for c, result in load_vectors()
        if progress_recorded(c) and "error" not in result and (not names or c.name in names)
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalRegistry(Path(tmp) / "r", port=port) as reg,
        serve_remote(Path(tmp) / "remote"),
    ):
        push_images(reg.host)
        # One at a time: BuildKit shows a step that concurrent builds share under the name
        # the first build gave it, and as it ended there.
        steps = [record_progress(c, buildctl, reg.host) for c in chosen]
    recorded = {c.name: s for c, s in zip(chosen, steps, strict=True)}
    if names and PROGRESS.exists():
        for item in json.loads(PROGRESS.read_text())["cases"]:
            recorded.setdefault(item["name"], item["steps"])
    _write_by_name(PROGRESS, {"progress": "plain, warm rebuild"}, "steps", recorded)
    print(f"progress: {len(recorded)} cases (multi-stage, several platforms, remote contexts)")
    return 0


def record_export(case: ExportCase, buildctl: str, registry: str) -> dict[str, Any]:
    """What buildctl answers when it exports the shared build with ``case``'s output."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "build"
        folder.mkdir()
        (folder / "Dockerfile").write_text(substitute(EXPORT_DOCKERFILE, registry))
        dest, answer = Path(tmp) / "out", Path(tmp) / "metadata.json"
        flag = output_flag(case, dest, registry)
        command = _buildctl(
            buildctl,
            (folder, folder),
            *case.flags,
            "--output",
            flag,
            "--metadata-file",
            str(answer),
        )
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.decode().strip().splitlines()
            return {"error": export_error(lines[-1] if lines else "failed", registry)}
        metadata = json.loads(answer.read_text()) if answer.exists() else {}
        return export_result(metadata, dest, case, registry)


def main_exports(buildctl: str, names: list[str], port: int) -> int:
    from llbkit.sdk.testing.registry import LocalRegistry

    chosen = [c for c in EXPORT_CASES if not names or c.name in names]
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(Path(tmp) / "r", port=port) as reg:
        push_images(reg.host)
        record_export(ExportCase("warm", WARM_OUTPUT), buildctl, reg.host)
        # One at a time, on a warm cache: each case is the export alone.
        recorded = {
            c.name: {**c.record(), "result": record_export(c, buildctl, reg.host)} for c in chosen
        }
    if names:
        for case, result in load_exports():
            recorded.setdefault(case.name, {**case.record(), "result": result})
    document = {
        "buildkit": BUILDKIT_VERSION,
        "cases": [recorded[c.name] for c in EXPORT_CASES if c.name in recorded],
    }
    EXPORTS.parent.mkdir(exist_ok=True)
    EXPORTS.write_text(json.dumps(document, indent=1) + "\n")
    failing = sum("error" in item["result"] for item in document["cases"])
    print(f"exports: {len(document['cases'])} cases, {failing} failing in BuildKit")
    return 0


def _write_by_name(path: Path, said: dict[str, str], field: str, recorded: dict[str, Any]) -> None:
    """A vectors file of what each case recorded (as ``field``), by name, with BuildKit's
    version and ``said`` of how."""
    cases = [{"name": n, field: recorded[n]} for n in sorted(recorded)]
    document = {"buildkit": BUILDKIT_VERSION, **said, "cases": cases}
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def record_llb(case: Case, df2llb: str, registry: str, images: Path) -> list[list[str]] | None:
    """The definitions BuildKit's own frontend makes of ``case`` (through ``df2llb``),
    normalized; None when it refuses the case."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx, dfdir = materialize(case, Path(tmp), registry)
        out = Path(tmp) / "out"
        out.mkdir()
        command = [df2llb, "--images", str(images), "--out", str(out)]
        command += ["--local", f"context={ctx}", "--local", f"dockerfile={dfdir}"]
        for key, value in opts(case, registry).items():
            command += ["--opt", f"{key}={value}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{case.name}: {done.stderr.strip()[-200:]}", file=sys.stderr)
            return None
        return sorted(normalize_llb(f.read_bytes(), registry) for f in out.glob("def-*.pb"))


def main_llb(df2llb: str, names: list[str], port: int) -> int:
    from llbkit.sdk.testing.registry import LocalRegistry

    chosen = [c for c, r in load_vectors() if llb_compared(c, r) and (not names or c.name in names)]
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(Path(tmp) / "r", port=port) as reg:
        push_images(reg.host)
        images = Path(tmp) / "images.json"
        images.write_text(json.dumps(image_configs(reg.host)))
        with ThreadPoolExecutor(4) as pool:
            found = pool.map(lambda c: record_llb(c, df2llb, reg.host, images), chosen)
            recorded = {c.name: d for c, d in zip(chosen, found, strict=True) if d is not None}
    if names:
        for name, definitions in load_llb().items():
            recorded.setdefault(name, definitions)
    said = {"llb": "BuildKit's frontend (builder.Build), normalized by harness.normalize_llb"}
    _write_by_name(LLB, said, "llb", recorded)
    print(f"llb: {len(recorded)} cases")
    return 0


def record_keys(case: Case, buildctl: str, registry: str) -> dict[str, list[list[str]]] | None:
    """The records of the cache BuildKit exports building ``case`` (mode=max): each digest's
    inputs, as the selectors of the links to it (``""``: a link without one), shortened to
    16 hex digits. None when BuildKit does not build it."""
    with tempfile.TemporaryDirectory() as tmp, agent_sockets(case) as agents:
        command = _case_command(buildctl, case, registry, Path(tmp), "-")
        command += [f"--ssh={sid}={path}" for sid, path in agents.items()]
        command += ["--export-cache", f"type=local,dest={tmp}/cache,mode=max"]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            print(f"{case.name}: {done.stderr.decode().strip()[-200:]}", file=sys.stderr)
            return None
        blobs = Path(tmp) / "cache" / "blobs" / "sha256"
        top = json.loads((Path(tmp) / "cache" / "index.json").read_text())["manifests"][0]
        index = json.loads((blobs / top["digest"][7:]).read_text())
        config = next(m for m in index["manifests"] if "cacheconfig" in m["mediaType"])
        raw = json.loads((blobs / config["digest"][7:]).read_text())
    short = {n: r["digest"][7:23] for n, r in enumerate(raw.get("records") or [])}
    records: dict[str, list[list[str]]] = {}
    for n, item in enumerate(raw.get("records") or []):
        inputs = records.setdefault(short[n], [])
        for i, links in enumerate(item.get("inputs") or []):
            while len(inputs) <= i:
                inputs.append([])
            for link in links:
                selector = link.get("selector", "")[7:23]
                if selector not in inputs[i]:
                    inputs[i].append(selector)
    return {k: [sorted(i) for i in v] for k, v in sorted(records.items())}


def main_keys(buildctl: str, names: list[str], port: int) -> int:
    from llbkit.sdk.testing.registry import LocalRegistry

    chosen = [c for c, r in load_vectors() if llb_compared(c, r) and (not names or c.name in names)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalRegistry(Path(tmp) / "r", port=port) as reg,
        serve_remote(Path(tmp) / "remote"),
    ):
        push_images(reg.host)
        subprocess.run([buildctl, "prune", "--all"], capture_output=True, check=True)
        with ThreadPoolExecutor(3) as pool:
            found = pool.map(lambda c: record_keys(c, buildctl, reg.host), chosen)
            recorded = {c.name: k for c, k in zip(chosen, found, strict=True) if k is not None}
    if names and CACHE_KEYS.exists():
        for item in json.loads(CACHE_KEYS.read_text())["cases"]:
            recorded.setdefault(item["name"], item["records"])
    said = {"records": "digest: [input: [link selectors]], sha256 hex cut to 16 digits"}
    _write_by_name(CACHE_KEYS, said, "records", recorded)
    print(f"cache keys: {len(recorded)} cases")
    return 0


def main() -> int:
    from llbkit.sdk.testing.registry import LocalRegistry
    from tests.differential.generate import generated

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--count", type=int, default=220)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--exports", action="store_true")
    parser.add_argument("--llb", action="store_true")
    parser.add_argument("--cache-keys", action="store_true")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    buildctl = os.environ.get("BUILDCTL", "buildctl")
    if args.progress:
        return main_progress(buildctl, args.names, args.port)
    if args.exports:
        return main_exports(buildctl, args.names, args.port)
    if args.cache_keys:
        return main_keys(buildctl, args.names, args.port)
    if args.llb:
        return main_llb(os.environ.get("DF2LLB", "df2llb"), args.names, args.port)
    everything = handwritten.CASES + generated(args.seed, args.count)
    names = [c.name for c in everything]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    chosen = [c for c in everything if not args.names or c.name in args.names]
    base = busybox_tree()
    shared = [c for c in chosen if isolated_base(c) is None]
    alone = [(c, isolated_base(c)) for c in chosen if isolated_base(c) is not None]
    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalRegistry(Path(tmp) / "r", port=args.port) as reg,
        serve_remote(Path(tmp) / "remote"),
    ):
        push_images(reg.host)
        fresh(buildctl, reg.host, "@BASE@")
        with ThreadPoolExecutor(3) as pool:
            found = pool.map(lambda c: record(c, buildctl, reg.host, base), shared)
            results.update(zip((c.name for c in shared), found, strict=True))
        for case, mark in alone:
            fresh(buildctl, reg.host, str(mark))
            results[case.name] = record(case, buildctl, reg.host, base)
    recorded = {c.name: {**c.record(), "result": results[c.name]} for c in chosen}
    if args.names:
        for path in VECTORS.glob("*.json"):
            for item in json.loads(path.read_text())["cases"]:
                recorded.setdefault(item["name"], item)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for case in everything:
        if case.name in recorded:
            by_category.setdefault(case.category, []).append(recorded[case.name])
    VECTORS.mkdir(exist_ok=True)
    for path in VECTORS.glob("*.json"):
        path.unlink()
    for category, items in sorted(by_category.items()):
        document = {
            "buildkit": BUILDKIT_VERSION,
            "seed": args.seed,
            "count": args.count,
            "cases": items,
        }
        (VECTORS / f"{category}.json").write_text(json.dumps(document, indent=1) + "\n")
        errors = sum("error" in i["result"] for i in items)
        print(f"{category}: {len(items)} cases, {errors} failing in BuildKit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
