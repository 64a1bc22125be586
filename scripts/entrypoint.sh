#!/bin/sh
# The image's entrypoint: one named command per role, default `api`.
#   api            public gateway (gunicorn, scripts/gunicorn.conf.py) on $PORT
#   private-api    private registration API on $PRIVATE_PORT (never behind the public nginx)
#   worker         Celery worker (extra arguments are passed to celery)
#   beat           Celery beat: scrub, sketches, health, sweeper, janitor
#   chain          dev only: anvil + test token, writes $PAYMENT_CONFIG
#   rebuild-index  one-off: rebuild the Redis file index from the node directories
#   healthcheck    exit 0 when GET /health on $PORT (or the port given) answers 2xx
#   anything else  run as given (e.g. `sh`, `python -m workers.chain.devchain deploy ...`)
set -eu
cmd=${1:-api}
[ $# -gt 0 ] && shift

# Prometheus multiprocess files (workers.metrics): the roles share $PROMETHEUS_MULTIPROC_DIR on
# the /data volume, each file named <host>-<pid>; a role starts by removing its own host's.
fresh_metrics() {
  if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    rm -f "$PROMETHEUS_MULTIPROC_DIR"/*_"$(hostname)"-*.db
  fi
}
case "$cmd" in
  api|private-api|worker|beat) fresh_metrics ;;
esac

# The configuration (settings and PAYMENT_CONFIG) is checked before the api and worker start: a
# bad value stops the container with one line per error (exit 78) rather than a traceback at the
# first paid request. The api needs no wallet key (--no-keys); the worker's key file must hold
# each chain's gateway_address. A missing PAYMENT_CONFIG file is waited for CONFIG_WAIT seconds
# (the dev chain writes it while the other containers start). RPC nodes are not asked here
# (an RPC outage must not stop a restart): run `python -m workers.check --rpc` by hand.
check_config() {
  python -m workers.check --wait "${CONFIG_WAIT:-60}" "$@" >/dev/null
}
case "$cmd" in
  api) check_config --no-keys ;;
  worker) check_config ;;
esac

case "$cmd" in
  api)
    exec gunicorn --config scripts/gunicorn.conf.py --bind "0.0.0.0:${PORT:-5000}" "$@" api.wsgi:app
    ;;
  private-api)
    exec gunicorn --config scripts/gunicorn.conf.py --workers "${PRIVATE_WORKERS:-1}" \
      --bind "0.0.0.0:${PRIVATE_PORT:-5001}" "$@" "api.private:create_private_app()"
    ;;
  worker)
    exec celery -A workers.celery_app worker --loglevel "${LOG_LEVEL:-INFO}" \
      --concurrency "${WORKER_CONCURRENCY:-2}" -n "worker@%h" "$@"
    ;;
  beat)
    mkdir -p "${BEAT_DIR:-/data/beat}"
    exec celery -A workers.celery_app beat --loglevel "${LOG_LEVEL:-INFO}" \
      --schedule "${BEAT_DIR:-/data/beat}/celerybeat-schedule" "$@"
    ;;
  chain)
    exec python -m workers.chain.devchain up --host 0.0.0.0 --port "${CHAIN_PORT:-8545}" \
      --out "${PAYMENT_CONFIG:-/chain/devchain.json}" "$@"
    ;;
  rebuild-index)
    exec python -c 'from workers.tasks.storage import rebuild_index; print(rebuild_index(), "files indexed")'
    ;;
  healthcheck)
    exec python -c 'import sys, urllib.request; urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=4)' \
      "${1:-${PORT:-5000}}"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
