#!/usr/bin/env bash
# `make loadtest`: a bounded headless Locust run against `make serve`'s stack on loopback.
#
#   scripts/loadtest.sh [--users 16] [--spawn-rate 4] [--run-time 2m] [--voices 64] [--tenants 4]
#                       [--http-port 8080] [--grpc-port 50051] [--out DIR] [-- LOCUST ARGS...]
#
# Uses the running stack when its gateway answers on --http-port; otherwise starts `make serve`'s
# stack (scripts/serve.sh) in the background for the run and stops it afterwards. Registers
# --voices voices over --tenants tenants with their API keys (python -m loadtest.setup_voices;
# idempotent), runs the HTTP and gRPC users (loadtest/locustfile.py) headless, and writes
# OUT/lt_stats.csv, _stats_history.csv, _failures.csv, _exceptions.csv, _requests.csv,
# OUT/lt_locust.html (Locust's report) and OUT/lt_report.html (plots). Exit status: Locust's
# (1 when any request failed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=$VENV/bin/python
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
USERS=16 RATE=4 RUN_TIME=2m VOICES=64 TENANTS=4 HTTP_PORT=8080 GRPC_PORT=50051
OUT=out/loadtest/$(date +%Y%m%d-%H%M%S)
EXTRA=()
while (($#)); do
  case $1 in
    --users) USERS=$2; shift ;;
    --spawn-rate) RATE=$2; shift ;;
    --run-time) RUN_TIME=$2; shift ;;
    --voices) VOICES=$2; shift ;;
    --tenants) TENANTS=$2; shift ;;
    --http-port) HTTP_PORT=$2; shift ;;
    --grpc-port) GRPC_PORT=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
URL=http://127.0.0.1:$HTTP_PORT
HOME_DIR=${TRITONE_HOME:-data}
SCENARIO=$HOME_DIR/loadtest/scenario.json
mkdir -p "$OUT"

ready() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/readyz" 2>/dev/null; }
SERVE_PID=
stop_stack() {
  if [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
    echo "==> stopping the stack started for this run"
    kill -INT -- "-$SERVE_PID" 2>/dev/null || true
    for _ in $(seq 90); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 1; done
  fi
}
if ready; then
  echo "==> using the stack already running at $URL"
else
  echo "==> no gateway at $URL: starting make serve's stack (log: $OUT/serve.log) ..."
  trap stop_stack EXIT
  TRITONE_SKIP_SETUP=1 setsid scripts/serve.sh --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
    >"$OUT/serve.log" 2>&1 &
  SERVE_PID=$!
  for _ in $(seq 900); do
    ready && break
    kill -0 "$SERVE_PID" 2>/dev/null || { tail -30 "$OUT/serve.log"; echo "make serve exited" >&2; exit 1; }
    sleep 1
  done
  ready || { echo "the stack was not ready in 15 minutes (see $OUT/serve.log)" >&2; exit 1; }
fi

"$PY" -m loadtest.setup_voices --count "$VOICES" --tenants "$TENANTS" --scenario "$SCENARIO" \
  --http "$URL" --grpc "127.0.0.1:$GRPC_PORT"
echo "==> locust: $USERS users, $RUN_TIME, $VOICES voices (results in $OUT)"
set +e
"$VENV/bin/locust" -f loadtest/locustfile.py --headless -u "$USERS" -r "$RATE" -t "$RUN_TIME" \
  --scenario "$SCENARIO" --csv "$OUT/lt" --csv-full-history --html "$OUT/lt_locust.html" \
  --only-summary --stop-timeout 30 "${EXTRA[@]}" HttpTTSUser GrpcTTSUser
status=$?
set -e
"$PY" -m loadtest.report "$OUT/lt" --title "tritone load test: $USERS users, $RUN_TIME, $VOICES voices"
exit $status
