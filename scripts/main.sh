#!/usr/bin/env bash
# The main job: set up, make a busybox base image (from Debian's busybox-static) as an OCI
# layout, and build examples/app's Dockerfile (multi-stage, RUN with a cache mount, COPY) with
# the embedded engine into an OCI tarball; then show what the cache holds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
if [ "$(id -u)" != 0 ]; then
    echo "main: RUN steps need root (runc and overlay mounts); run as root" >&2
    exit 1
fi
out=${LLBKIT_OUT:-$root/out}
state=${LLBKIT_ROOT:-$out/state}
mkdir -p "$out"
llbkit() { .venv/bin/llbkit --root "$state" "$@"; }

rm -rf "$out/busybox-layout"
digest=$(.venv/bin/python examples/busybox_layout.py "$out/busybox-layout")
echo "== base image: busybox as an OCI layout ($digest)"
build=(build --frontend dockerfile.v0 --local context=examples/app --local dockerfile=examples/app
       --oci-layout "busybox=$out/busybox-layout"
       --opt "context:busybox=oci-layout://busybox@$digest" --opt build-arg:BASE=busybox)
echo "== build examples/app (cold)"
llbkit "${build[@]}" --progress plain \
    --output "type=oci,dest=$out/app.tar,name=example/app:latest" \
    --metadata-file "$out/metadata.json"
echo "== build again (cached)"
llbkit "${build[@]}" --progress plain
echo "== the build cache (llbkit du)"
llbkit du
image=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "$out/metadata.json")
echo "image: example/app:latest $image"
echo "output: $out/app.tar (OCI image layout tarball); cache: $state"
