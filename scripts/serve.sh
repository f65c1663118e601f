#!/usr/bin/env bash
# `make serve`: set up (idempotent), prepare the demo voice, start the embedded registry, the real
# Triton server (cpu target) and the gateway on loopback, print a ready-to-paste request.
# Ctrl-C stops everything. Extra arguments go to `python -m gateway.demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[[ -n "${TRITONE_SKIP_SETUP:-}" ]] || scripts/setup.sh   # the test of this script runs in an environment already set up
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m gateway.demo "$@"
