#!/usr/bin/env bash
# The main job: set up, author an LLB graph in Python, and inspect it with llbkit.
# (Builds with the embedded engine join this script when the engine lands.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
out=${LLBKIT_OUT:-$root/out}
mkdir -p "$out"
.venv/bin/python examples/hello_llb.py > "$out/hello.llb"
echo "== the definition, op by op (as buildctl debug dump-llb prints it)"
.venv/bin/llbkit debug dump-llb "$out/hello.llb"
.venv/bin/llbkit debug dump-llb --dot "$out/hello.llb" > "$out/hello.dot"
echo "== installed plugins"
.venv/bin/llbkit debug plugins
echo "definition: $out/hello.llb ($(wc -c < "$out/hello.llb") bytes), graph: $out/hello.dot"
