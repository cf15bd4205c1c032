#!/usr/bin/env bash
# `make run`: the proxy in the foreground. With no API key configured it fronts the bundled
# pixxel-sim on loopback, with a demo client token kept in .run/ (reused across runs).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.build/release
PROXY_PORT=${PROXY_PORT:-8787}
SIM_PORT=${SIM_PORT:-8788}
RUN_DIR=.run
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

if [ ! -s "$RUN_DIR/demo-token" ] || [ ! -s "$RUN_DIR/clients" ]; then
    rm -f "$RUN_DIR/clients"
    (umask 077; "$BIN/pixxel-proxy" token add demo --scopes read,write,admin --clients-file "$RUN_DIR/clients" \
        2>/dev/null > "$RUN_DIR/demo-token")
fi
TOKEN=$(cat "$RUN_DIR/demo-token")
export PIXXEL_PROXY_AUTH_CLIENTS_FILE="$RUN_DIR/clients"
export PIXXEL_PROXY_LISTEN_HOST=127.0.0.1
export PIXXEL_PROXY_LISTEN_PORT="$PROXY_PORT"
export PIXXEL_PROXY_CACHE_DIRECTORY="$RUN_DIR/cache"

have_key() {
    [ -n "${PIXXEL_API_KEY:-}" ] || [ -n "${PIXXEL_PROXY_UPSTREAM_API_KEY:-}" ] || [ -n "${PIXXEL_PROXY_UPSTREAM_API_KEY_FILE:-}" ] \
        || grep -Eq '^[[:space:]]*(api_key|api_key_file):' config/pixxel-proxy.yaml 2>/dev/null
}

WORKFLOW="<workflow_id>"
if ! have_key; then
    SIM_KEY="sim-demo-key"
    "$BIN/pixxel-sim" --host 127.0.0.1 --port "$SIM_PORT" --api-key "$SIM_KEY" 2> "$RUN_DIR/sim.log" &
    SIM_PID=$!
    trap 'kill $SIM_PID 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null -H "Authorization: $SIM_KEY" "http://127.0.0.1:$SIM_PORT/_sim/workflows" 2>/dev/null && break
        kill -0 $SIM_PID 2>/dev/null || { cat "$RUN_DIR/sim.log" >&2; exit 1; }
        sleep 0.1
    done
    WORKFLOW=$(sed -n 's/^pixxel-sim: workflow //p' "$RUN_DIR/sim.log" | head -n 1)
    export PIXXEL_PROXY_UPSTREAM_URL="http://127.0.0.1:$SIM_PORT"
    export PIXXEL_API_KEY="$SIM_KEY"
    echo "No API key configured: fronting pixxel-sim on 127.0.0.1:$SIM_PORT (its log: $RUN_DIR/sim.log)."
fi

cat <<TXT

pixxel-proxy on http://127.0.0.1:$PROXY_PORT. Try, from another terminal:

  curl -s -H 'Authorization: Bearer $TOKEN' 'http://127.0.0.1:$PROXY_PORT/v0/workflows/$WORKFLOW/jobs'
  curl -s -H 'Authorization: Bearer $TOKEN' 'http://127.0.0.1:$PROXY_PORT/v0/workflows/$WORKFLOW/jobs?status=running'

The demo token (scopes read,write,admin) is in $RUN_DIR/demo-token. Ctrl-C stops the proxy.

TXT
"$BIN/pixxel-proxy" serve
