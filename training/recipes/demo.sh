#!/usr/bin/env bash
# Reproduce the shipped demo (demo/base + demo/voice) from a fresh clone, seed 1234.
#
#   training/recipes/demo.sh            # everything: corpus, base, adapter, evaluation, ship
#   training/recipes/demo.sh eval       # one stage: base | spectral | refine | adapters | eval | ship
#
# The same as `tritone train demo --stage STAGE`. On 2 shared CPU cores the base takes a few
# hours (docs/TRAINING.md has the measured times); every stage resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
"$PY" -m tritone.cli data demo
exec "$PY" -m tritone.cli train demo --seed 1234 --voices flite_rms --stage "${1:-all}"
