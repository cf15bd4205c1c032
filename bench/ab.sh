#!/usr/bin/env bash
# Hit throughput of two pixxel-proxy builds side by side, loopback only: `bench/ab.sh OLD NEW`
# (paths to pixxel-proxy binaries; pixxel-sim from .build/release). Both front one pixxel-sim,
# are warmed, then measured alternately with wrk (detail, list and filtered hits at 64
# connections, AB_ROUNDS rounds of AB_SECONDS each), so a drift of the machine hits both.
# Prints req/s per run and the NEW/OLD ratio of the medians. Bounded: about
# 3 cases x 2 builds x AB_ROUNDS x AB_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
NEW=${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}
ROUNDS=${AB_ROUNDS:-3}
SECONDS_PER_RUN=${AB_SECONDS:-5}
CONNECTIONS=${AB_CONNECTIONS:-64}
HOST=127.0.0.1
SIM_PORT=18811 OLD_PORT=18812 NEW_PORT=18813
OUT=bench/out/ab
API_KEY=bench-sim-key

command -v wrk >/dev/null || { echo "ab: wrk is missing (make bench installs it)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

wait_for() {  # url [header]
    for _ in $(seq 1 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "${2:-X-AB: 1}" "$1" || true)" = "200" ] && return 0
        sleep 0.05
    done
    echo "ab: $1 never answered" >&2
    exit 1
}

.build/release/pixxel-sim --host $HOST --port $SIM_PORT --api-key $API_KEY --workflows 3 --jobs 50 >"$OUT/sim.log" 2>&1 &
PIDS+=($!)
wait_for "http://$HOST:$SIM_PORT/_sim/workflows" "Authorization: $API_KEY"
"$NEW" token add ab --scopes read --clients-file "$OUT/clients" >"$OUT/token" 2>/dev/null
TOKEN=$(cat "$OUT/token")

start() {  # binary port name
    env PIXXEL_PROXY_LISTEN_HOST=$HOST PIXXEL_PROXY_LISTEN_PORT=$2 \
        PIXXEL_PROXY_UPSTREAM_URL="http://$HOST:$SIM_PORT" PIXXEL_API_KEY=$API_KEY \
        PIXXEL_PROXY_UPSTREAM_REQUESTS_PER_SECOND=0 PIXXEL_PROXY_CACHE_TTL_JOB_LIST_SECONDS=600 \
        PIXXEL_PROXY_CACHE_TTL_ACTIVE_JOB_SECONDS=600 PIXXEL_PROXY_CACHE_DIRECTORY="$OUT/cache-$3" \
        PIXXEL_PROXY_AUTH_CLIENTS_FILE="$OUT/clients" PIXXEL_PROXY_LOG_LEVEL=info \
        "$1" serve >"$OUT/$3.log" 2>&1 &
    PIDS+=($!)
    wait_for "http://$HOST:$2/healthz"
}
start "$OLD" $OLD_PORT old
start "$NEW" $NEW_PORT new

WORKFLOW=$(sed -n 's/^pixxel-sim: workflow //p' "$OUT/sim.log" | head -n 1)
JOB=$(curl -s -H "Authorization: $TOKEN" "http://$HOST:$NEW_PORT/v0/workflows/$WORKFLOW/jobs" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
declare -A PATHS=([detail]="/v0/workflows/$WORKFLOW/jobs/$JOB" [list]="/v0/workflows/$WORKFLOW/jobs"
                  [filtered]="/v0/workflows/$WORKFLOW/jobs?status=completed")
for port in $OLD_PORT $NEW_PORT; do
    for path in "${PATHS[@]}"; do
        for _ in 1 2 3; do curl -s -o /dev/null -H "Authorization: $TOKEN" "http://$HOST:$port$path"; done
        curl -s -D - -o /dev/null -H "Authorization: $TOKEN" "http://$HOST:$port$path" | grep -qi '^cache-status: pixxel-proxy; hit' \
            || { echo "ab: $path is not a hit on port $port" >&2; exit 1; }
    done
done

run() {  # port path -> req/s
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -H "Authorization: $TOKEN" "http://$HOST:$1$2" \
        | awk '/Requests\/sec/ { printf "%d", $2 }'
}
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-9s %-40s %-40s %s\n' case "old req/s" "new req/s" "new/old"
for name in detail list filtered; do
    old_runs="" new_runs=""
    for _ in $(seq 1 "$ROUNDS"); do
        old_runs+="$(run $OLD_PORT "${PATHS[$name]}") "
        new_runs+="$(run $NEW_PORT "${PATHS[$name]}") "
    done
    old_median=$(echo $old_runs | median) new_median=$(echo $new_runs | median)
    printf '%-9s %-40s %-40s %s\n' "$name" "$old_runs" "$new_runs" \
        "$(awk -v n="$new_median" -v o="$old_median" 'BEGIN { printf "%.2f", n / o }')"
done
