#!/usr/bin/env bash
# The main job: set up, then build with the embedded engine (no daemon), twice, and show the
# result, the cache it left, and an LLB graph authored with the SDK.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
out=${LLBKIT_OUT:-$root/out}
state=${LLBKIT_ROOT:-$out/state}
mkdir -p "$out"
llbkit() { .venv/bin/llbkit --root "$state" "$@"; }

.venv/bin/python examples/site_llb.py > "$out/site.llb"
echo "== build (cold)"
rm -rf "$out/site"
llbkit build --progress plain --local site=examples/site \
    --output "type=local,dest=$out/site" --output "type=tar,dest=$out/site.tar" \
    --metadata-file "$out/metadata.json" < "$out/site.llb"
echo "== build again (cached)"
llbkit build --progress plain --local site=examples/site < "$out/site.llb"
echo "== the result"
find "$out/site" | sort
echo "== the build cache (llbkit du)"
llbkit du
echo "== an LLB graph with a container step, as buildctl debug dump-llb prints it"
.venv/bin/python examples/hello_llb.py > "$out/hello.llb"
.venv/bin/llbkit debug dump-llb "$out/hello.llb" | head -3
echo "== installed plugins"
.venv/bin/llbkit debug plugins
echo "result: $out/site, $out/site.tar; cache: $state"
