#!/usr/bin/env bash
# `make bench`: run every benchmark and rewrite its rows in docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
run() { local name=$1; shift; echo "==> bench: $name"; "$PY" -m loadtest.bench_doc "$name" -- "$PY" "$@"; }
run resolve -m adapters.bench_resolve
run serving -m loadtest.bench_serving --threads 1
