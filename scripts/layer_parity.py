"""Compare llbkit's image layers with BuildKit's, header by header, on generated Dockerfiles.

Each case is 1-3 ``RUN``s of random file operations (over paths the base has and new ones:
long, non-ASCII, deleted, replaced, hard-linked, with other modes and owners) and ``COPY``s,
built by ``buildctl`` against a running buildkitd and by llbkit, both exported as OCI tarballs
with uncompressed layers. A layer passes when its entries, headers and contents are the same,
times aside (a ``RUN`` writes the time of the build); the base image's layer must be the same
blob. By hand (needs BuildKit and a registry with a busybox image)::

    python scripts/layer_parity.py --addr unix:///run/buildkit/buildkitd.sock \\
        --base REGISTRY/library/busybox --cases 200 --work /tmp/parity [--config llbkitd.toml]
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

ROOTS = ["/etc", "/bin", "/tmp", "/a", "/a/b", "/a.b", "/a-b", "/n", "/n/m/o", "/etc/sub", "/x y"]
NAMES = ["f", "g", "a", "a.txt", "a0", "b", "Z", "caf\u00e9", "l" * 101, "dd"]
COPIES = ["COPY . /ctx/", "COPY f1 /etc/", "COPY sub /a/", "COPY . /"]


def _operation(rnd: random.Random) -> str:
    path = rnd.choice(ROOTS) + "/" + rnd.choice(NAMES)
    root = rnd.choice(ROOTS)
    made = f"mkdir -p '{os.path.dirname(path)}' && "
    choices = [
        made + f"echo {rnd.randrange(99)} > '{path}'",
        f"mkdir -p '{path}'",
        f"rm -rf '{path}'",
        made + f"ln -sf '{rnd.choice(NAMES)}' '{path}'",
        made + f"echo h > '{path}' && ln -f '{path}' '{path}.hl'",
        f"chmod {rnd.choice(['700', '755', '4755', '1777', '644'])} '{root}' 2>/dev/null",
        f"chown {rnd.choice(['1:1', '0:0', '123:456', '5000000:7'])} '{root}' 2>/dev/null",
        made + f"mkfifo '{path}.fifo' 2>/dev/null",
        made + f"touch -d '2001-0{rnd.randrange(1, 9)}-03 04:05:06' '{path}'",
        f"rm -rf '{root}' && mkdir -p '{rnd.choice(ROOTS)}'",
        f"touch '{root}' 2>/dev/null",
        made + f"echo same > '{path}' && cp -p '{path}' '{path}.2'",
        "chmod 644 /etc/passwd",
    ]
    return rnd.choice(choices)


def make_case(folder: Path, rnd: random.Random) -> None:
    lines = ["ARG BASE", "FROM $BASE"]
    for _ in range(rnd.randrange(1, 4)):
        if rnd.random() < 0.15:
            lines.append(rnd.choice(COPIES))
        else:
            steps = " ; ".join(_operation(rnd) for _ in range(rnd.randrange(1, 6)))
            lines.append(f"RUN {steps} ; true")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text("\n".join(lines) + "\n")
    (folder / "f1").write_text("one\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "f2").write_text("2\n")
    os.utime(folder / "f1", ns=(1_600_000_000_500_000_000,) * 2)


def _layers(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return member.read()

        index = json.loads(blob_index(tar))
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return [(layer["digest"], blob(layer["digest"])) for layer in manifest["layers"]]


def blob_index(tar: tarfile.TarFile) -> bytes:
    member = tar.extractfile("index.json")
    assert member is not None
    return member.read()


def blocks(raw: bytes) -> list[str]:
    """Each header of a tar, its time and checksum blanked, with a digest of its data."""
    out, at = [], 0
    while at + 512 <= len(raw):
        header = bytearray(raw[at : at + 512])
        if header == bytes(512):
            out.append("zero block")
            at += 512
            continue
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        kind = chr(header[156])
        header[136:148] = b"T" * 12
        header[148:156] = b"C" * 8
        data = raw[at + 512 : at + 512 + size]
        at += 512 + (size + 511) // 512 * 512
        if kind in "xg":
            records = [r if b" mtime=" not in r else r.split(b"=")[0] for r in data.split(b"\n")]
            out.append(f"{bytes(header)!r} {records!r}")
        else:
            out.append(f"{bytes(header)!r} {hashlib.sha256(data).hexdigest()[:12]}")
    out.append(f"{len(raw) - at} bytes after the last block")
    return out


def compare(bk: Path, ll: Path) -> list[str]:
    ours, theirs = _layers(ll), _layers(bk)
    if len(ours) != len(theirs):
        return [f"{len(theirs)} layers in BuildKit's image, {len(ours)} in llbkit's"]
    problems = []
    for n, ((their_digest, their), (our_digest, our)) in enumerate(zip(theirs, ours, strict=True)):
        if their_digest == our_digest:
            continue
        if n == 0:
            problems.append("the base layer is not the pulled blob")
            continue
        diff = difflib.unified_diff(blocks(their), blocks(our), "buildkit", "llbkit", n=0)
        problems += [f"layer {n}: {line[:200]}" for line in list(diff)[2:12]]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="buildkitd's address, as buildctl takes it")
    parser.add_argument("--base", required=True, help="a busybox image both can pull")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--config", help="llbkit's buildkitd.toml (registry settings)")
    parser.add_argument("--buildctl", default="buildctl")
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    llbkit = [sys.executable, "-m", "llbkit.core", "--root", str(args.work / "root")]
    if args.config:
        llbkit += ["--config", args.config]
    same = built = 0
    for n in range(args.cases):
        case = args.work / f"case{args.seed}-{n:04d}"
        make_case(case, rnd)
        common = ["--frontend", "dockerfile.v0", "--local", f"context={case}"]
        common += ["--local", f"dockerfile={case}", "--opt", f"build-arg:BASE={args.base}"]
        output = "type=oci,compression=uncompressed,dest="
        theirs = [args.buildctl, "--addr", args.addr, "build", "--progress", "plain", *common]
        ours = [*llbkit, "build", "--progress", "quiet", *common]
        ok = [
            subprocess.run(
                [*command, "--output", output + str(args.work / f"{case.name}.{who}.tar")],
                capture_output=True,
                timeout=120,
                check=False,
            ).returncode
            == 0
            for who, command in (("bk", theirs), ("ll", ours))
        ]
        if ok != [True, True]:
            if ok[0] != ok[1]:
                print(f"{case.name}: built by {'BuildKit' if ok[0] else 'llbkit'} only")
            continue
        built += 1
        problems = compare(args.work / f"{case.name}.bk.tar", args.work / f"{case.name}.ll.tar")
        if problems:
            print(f"{case.name}:", *problems, sep="\n  ")
        else:
            same += 1
    print(f"{same} / {built} cases built by both have the same layers (times aside)")
    return 0 if same == built else 1


if __name__ == "__main__":
    sys.exit(main())
