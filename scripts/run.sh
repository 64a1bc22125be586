#!/usr/bin/env bash
# `make run`: the whole stack natively, in the foreground. Ctrl-C stops everything it started.
#   redis-server (appendonly, noeviction) -> anvil dev chain + test token -> Celery worker and
#   beat -> gunicorn: public API on $PORT (5000), private registration API on $PRIVATE_PORT (5001).
# With PAYMENT_CONFIG set (real networks, README "Payments on real networks") no dev chain is
# started: that file and GATEWAY_KEY_FILE are used as they are. Either way `python -m
# workers.check --rpc` must pass before anything else starts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
DATA=${DATA_DIR:-data}
export PORT=${PORT:-5000}
export PRIVATE_PORT=${PRIVATE_PORT:-5001}
REDIS_PORT=${REDIS_PORT:-6379}
CHAIN_PORT=${CHAIN_PORT:-8545}
export STORAGE_DIR=${STORAGE_DIR:-$DATA/occ_storage}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
DEV_CHAIN=false
if [ -z "${PAYMENT_CONFIG:-}" ]; then DEV_CHAIN=true; PAYMENT_CONFIG=$DATA/devchain.json; fi
export PAYMENT_CONFIG
export PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-http://localhost:$PORT}
export ALLOW_LOOPBACK_SERVICES=${ALLOW_LOOPBACK_SERVICES:-true}
# Prometheus multiprocess files of gunicorn and the Celery worker (workers.metrics): fresh per start.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$DATA/metrics}
mkdir -p "$DATA/redis" "$STORAGE_DIR" "$DATA/logs" "$PROMETHEUS_MULTIPROC_DIR"
rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "[run] stopping ${#pids[@]} processes" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 150); do port_busy "$1" && return 0; sleep 0.2; done
  echo "[run] $2 did not start on port $1" >&2; exit 1
}
ports=("$PORT" "$PRIVATE_PORT" "$REDIS_PORT")
[ "$DEV_CHAIN" = true ] && ports+=("$CHAIN_PORT")
for p in "${ports[@]}"; do
  if port_busy "$p"; then echo "[run] port $p is already in use: stop the other stack first" >&2; exit 1; fi
done

echo "[run] redis-server on 127.0.0.1:$REDIS_PORT" >&2
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$PWD/$DATA/redis" \
  --appendonly yes --maxmemory-policy noeviction --save "" --daemonize no \
  --logfile "$PWD/$DATA/logs/redis.log" &
pids+=($!)
wait_port "$REDIS_PORT" redis-server

if [ "$DEV_CHAIN" = true ]; then
  echo "[run] anvil dev chain on 127.0.0.1:$CHAIN_PORT, deploying the test token" >&2
  rm -f "$PAYMENT_CONFIG"
  "$VENV/bin/python" -m workers.chain.devchain up --port "$CHAIN_PORT" --out "$PAYMENT_CONFIG" &
  pids+=($!)
  for _ in $(seq 1 300); do [ -s "$PAYMENT_CONFIG" ] && break; sleep 0.2; done
  [ -s "$PAYMENT_CONFIG" ] || { echo "[run] dev chain did not come up" >&2; exit 1; }
  # the dev chain's file names its gateway key (gateway_key_file): no GATEWAY_KEY_FILE needed
else
  echo "[run] payments: $PAYMENT_CONFIG (no dev chain)" >&2
fi

echo "[run] checking the configuration (python -m workers.check --rpc)" >&2
"$VENV/bin/python" -m workers.check --rpc >&2 || { echo "[run] fix the lines above" >&2; exit 1; }

echo "[run] celery worker and beat" >&2
"$VENV/bin/celery" -A workers.celery_app worker --loglevel INFO --concurrency 2 -n "worker@%h" &
pids+=($!)
"$VENV/bin/celery" -A workers.celery_app beat --loglevel INFO --schedule "$DATA/celerybeat-schedule" &
pids+=($!)

echo "[run] private API on 127.0.0.1:$PRIVATE_PORT" >&2
"$VENV/bin/gunicorn" --bind "127.0.0.1:$PRIVATE_PORT" --workers 1 --threads 4 "api.private:create_private_app()" &
pids+=($!)

echo "[run] gateway on http://localhost:$PORT (OpenAPI: /docs, /openapi.json)" >&2
"$VENV/bin/gunicorn" --config scripts/gunicorn.conf.py --bind "${BIND_HOST:-127.0.0.1}:$PORT" api.wsgi:app &
pids+=($!)
wait_port "$PORT" gunicorn
echo "[run] ready. Ctrl-C to stop." >&2
wait -n "${pids[@]}"
echo "[run] a process exited; stopping the stack" >&2
