#!/usr/bin/env bash
# Regenerates llbkit's protobuf modules: LLB (core/src/llbkit/core/llb/_pb/ops.proto) and the
# Control API and session services (core/src/llbkit/core/api/_pb/*.proto, with gRPC stubs).
# The generator is pinned (grpcio-tools 1.85.1, mypy stubs from protoc's --pyi_out) so that
# the committed output is reproducible; tests/test_generated.py fails when it is stale.
#   usage: scripts/gen_proto.sh [OUT_DIR]   (default: core/src, i.e. in place)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/core/src}
python=${PYTHON:-$here/.venv/bin/python}
want="1.85.1"
have=$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')
if [ "$have" != "$want" ]; then
    echo "gen_proto.sh: needs grpcio-tools $want, found $have" >&2
    exit 1
fi
mkdir -p "$out/llbkit/core/llb/_pb" "$out/llbkit/core/api/_pb"
cd "$here/core/src"
"$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" \
    llbkit/core/llb/_pb/ops.proto
api=(llbkit/core/api/_pb/*.proto)
"$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" "${api[@]}"
for f in "$out"/llbkit/core/api/_pb/*_pb2_grpc.py; do  # a file that declares no service
    grep -q '^class .*Stub' "$f" || rm "$f"
done
generated=("$out"/llbkit/core/llb/_pb/*_pb2.py "$out"/llbkit/core/llb/_pb/*_pb2.pyi
    "$out"/llbkit/core/api/_pb/*_pb2.py "$out"/llbkit/core/api/_pb/*_pb2.pyi)
for f in "${generated[@]}" "$out"/llbkit/core/api/_pb/*_pb2_grpc.py; do
    [ -e "$f" ] || continue
    { echo "# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_proto.sh"; cat "$f"; } > "$f.tmp"
    mv "$f.tmp" "$f"
done
