#!/usr/bin/env bash
# `make bench`: run every benchmark and rewrite its rows in docs/BENCHMARKS.md.
#
#   scripts/bench.sh [--quick] [--base auto|tiny|DIR] [SECTION ...]
#
# --quick: fewer requests and repeats (served vs upstream-style, tiny base: about 8 minutes
# instead of 12 on 2 cores; the component section, about 13 minutes, is the same either way).
# --base: the base model of the served vs upstream-style rows (default auto: the shipped
# demo/base when it exists, else a tiny random one). SECTIONs limit the run to those sections
# (resolve, serving, components, vocoders, upstream, gpu; gpu runs only where CUDA is available). Also read
# from TRITONE_BENCH_QUICK=1 and TRITONE_BENCH_BASE.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
QUICK=${TRITONE_BENCH_QUICK:-}
BASE=${TRITONE_BENCH_BASE:-auto}
ONLY=()
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --base) BASE=$2; shift ;;
    --base=*) BASE=${1#*=} ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) ONLY+=("$1") ;;
  esac
  shift
done
want() { ((${#ONLY[@]} == 0)) || [[ " ${ONLY[*]} " == *" $1 "* ]]; }
run() { local name=$1; shift; want "$name" || return 0; echo "==> bench: $name"; "$PY" -m loadtest.bench_doc "$name" -- "$PY" "$@"; }

run resolve -m adapters.bench_resolve
run serving -m loadtest.bench_serving --threads 1 ${QUICK:+--repeats 1}
run components -m build.bench_components --threads 1
run vocoders -m build.bench_components --threads 1 --sizes demo demo-spectral --graphs vocoder

# Served stack vs the upstream-style path: one run measures, three sections show it.
RESULTS=data/bench/upstream.json
run upstream -m loadtest.bench_upstream --base "$BASE" ${QUICK:+--quick} --results "$RESULTS"
if want upstream; then
  "$PY" -m loadtest.bench_doc upstream-goals -- "$PY" -m loadtest.bench_upstream --render goals "$RESULTS"
  "$PY" -m loadtest.bench_doc upstream-memory -- "$PY" -m loadtest.bench_upstream --render memory "$RESULTS"
fi

# The gpu target on the full v2 size (parity with the CPU, RTF and time to first audio).
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  run gpu -m loadtest.bench_gpu --size v2 --target gpu --concurrency 1 8 64
elif ((${#ONLY[@]})) && want gpu; then
  echo "==> bench: gpu skipped (no CUDA GPU on this machine)"
fi
