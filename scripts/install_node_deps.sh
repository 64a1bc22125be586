#!/usr/bin/env bash
# Installs the pinned npm packages (anvil, solc-js, OpenZeppelin) with `npm ci`, only when
# node_modules is missing or older than package-lock.json, then prints the anvil binary path.
set -euo pipefail
cd "$(dirname "$0")/.."

ANVIL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
STAMP=node_modules/.package-lock.json   # written by npm on every install

if [ ! -x "$ANVIL" ] || [ ! -f "$STAMP" ] || [ package-lock.json -nt "$STAMP" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install_node_deps: npm not found (apt-get install -y nodejs npm)" >&2
        exit 1
    fi
    npm ci --no-audit --no-fund --loglevel=error >&2
    touch "$STAMP"
fi

"$ANVIL" --version >/dev/null
echo "$PWD/$ANVIL"
