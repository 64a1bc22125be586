#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: Debian packages (redis-server,
# nginx), a virtualenv with the pinned Python packages, and the pinned npm packages (anvil,
# solc, OpenZeppelin). Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# 1. Debian packages
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's packages may start system services; this project runs its own instances.
  for svc in redis-server nginx; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# 2. Python virtualenv with pinned packages
stamp="$VENV/.stamp-requirements"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] \
   || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Python packages (requirements-dev.txt)"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r requirements-dev.txt
  # the console script `occ-client` (editable: the work tree is the code)
  "$VENV/bin/pip" install -q --no-deps -e .
  touch "$stamp"
fi

# 3. npm packages (anvil binary, solc, OpenZeppelin)
if [ -f scripts/install_node_deps.sh ]; then
  bash scripts/install_node_deps.sh >/dev/null
fi
log "ready"
