#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs every check CI runs: lint, types, generated files, tests.
#   usage: scripts/test.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (core, sdk)"
.venv/bin/mypy core/src sdk/src
echo "== import contracts (lint-imports)"
.venv/bin/lint-imports --no-cache
echo "== pytest"
.venv/bin/pytest "$@"
