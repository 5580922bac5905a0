#!/usr/bin/env bash
# Sets up (as scripts/setup.sh, plus the peers and the chart's matplotlib), then runs the
# benchmark harness: llbkit beside every installed peer, medians printed and saved.
#   usage: scripts/bench.sh [--quick] [--runs N] [--out DIR] [--scenario NAME] [--tool NAME]
# buildctl/buildkitd are not packaged by Debian: put them on PATH to include BuildKit itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
if [ "$(id -u)" = 0 ] && ! command -v buildah >/dev/null; then
    echo "bench: installing buildah with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi
.tools/bin/uv sync --all-packages --frozen --group bench -q
exec env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/run.py "$@"
